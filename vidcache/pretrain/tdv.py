"""The TDV objective (Daithankar, Gladstone, LeCun, Ji 2026): the past causes the future.

A per-frame encoder f and a motion encoder g are trained so that the frame representation plus the
encoded change predicts the next frame's representation under an EMA teacher f':

    prev_t    = f(x_t)                                    CLS + patch tokens of frames 0..T-2
    motion_t  = W g(x_{t+1} - x_t | patch tokens of prev_t)   a ViT over the RGB difference that
                                                          cross-attends to the frame tokens
    pred_t    = prev_t + motion_t
    target_t  = f'(x_{t+1})                               no gradient; f' <- m f' + (1 - m) f
    loss      = 1.5 MSE(pred, target)                     (CenterSharpReconstructionLoss; its
                                                          centring / sharpening off, as the recipe)
              + 0.75 CE(h'(target CLS), h(pred CLS))      DINO loss on prototypes
              + 0.75 CE(h'(target patches), h(pred patches))   iBOT loss, same head and centre

Reference: ninaddaithankar/tdv, `model/cv/tdv/tdv.py` (TDV.forward_loss_wrapper,
calculate_loss_for_backward), `model/cv/tdv/losses/center_sharp_mse_loss.py`,
`model/cv/tdv/losses/dino_loss.py`, `model/cv/tdv/utils.py` (rollout_n_frames,
calculate_static_frames_mask, update_teacher_using_ema), `model/cv/dinov2/layers/dino_head.py`,
with the switches of `job_scripts/pretrain_tdv.slurm`. The prototype cross-entropy centres the
teacher logits with a running mean (momentum 0.9) that is updated after it is used: first with the
CLS logits (DINO), then with the patch logits (iBOT), because the recipe shares one centre.

Sequences whose mean absolute RGB difference is at most `static_threshold` are left out of every
term (`calculate_static_frames_mask`); all reductions are sums over kept sequences divided by the
global count, and centres are updated from global sums, so N ranks take the step one process takes.
Every value `forward` returns (loss and metrics) is a rank's share times the world size: their mean
over the ranks is the global value, and DDP's gradient average is the global gradient.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidcache.errors import ConfigError
from vidcache.models.vit import VisionTransformer, vit_from_size
from vidcache.pretrain.objective import Objective


class DINOHead(nn.Module):
    """MLP (GELU) to a bottleneck, L2-normalised, then a weight-normalised linear layer to the prototypes.

    As DINOv2's `DINOHead` (`model/cv/dinov2/layers/dino_head.py`): truncated-normal(0.02) linears,
    zero biases, the last layer's per-prototype norm `weight_g` starting at 1 (and trained).
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 layers: int = 3):
        super().__init__()
        layers = max(int(layers), 1)
        dims = [in_dim] + [hidden_dim] * (layers - 1) + [bottleneck_dim]
        mods: list[nn.Module] = []
        for i in range(layers):
            mods.append(nn.Linear(dims[i], dims[i + 1]))
            if i < layers - 1:
                mods.append(nn.GELU())
        self.mlp = nn.Sequential(*mods)
        self.weight_v = nn.Parameter(torch.empty(out_dim, bottleneck_dim))
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                w = torch.empty(m.weight.shape)
                nn.init.trunc_normal_(w, std=0.02, generator=generator)
                m.weight.copy_(w)
                m.bias.zero_()
        # torch.nn.Linear's default (kaiming-uniform) for the last layer, as weight_norm keeps it.
        bound = 1.0 / math.sqrt(self.weight_v.shape[1])
        self.weight_v.copy_(torch.rand(self.weight_v.shape, generator=generator) * 2 * bound - bound)
        self.weight_g.fill_(1.0)

    def forward(self, x: Tensor) -> Tensor:
        x = self.mlp(x)
        x = F.normalize(x, dim=-1, p=2, eps=1e-6 if x.dtype == torch.float16 else 1e-12)
        w = self.weight_g * self.weight_v / self.weight_v.norm(dim=1, keepdim=True)
        return F.linear(x, w.to(x.dtype))


# ----------------------------------------------------------------------------- reductions

def _all_reduce_sum(t: Tensor) -> Tensor:
    if torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_world_size() > 1:
        torch.distributed.all_reduce(t)
    return t


def _world() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def masked_mean(per_seq: Tensor, keep: Tensor, n_global: Tensor) -> Tensor:
    """Mean over the kept sequences of every rank: local sum / global count, times the world size
    (DDP averages the ranks' gradients)."""
    return (per_seq * keep).sum() / n_global.clamp(min=1) * _world()


@torch.no_grad()
def update_center(center: Tensor, logits: Tensor, keep: Tensor, momentum: float) -> None:
    """center <- m center + (1 - m) mean of `logits` [B, ..., K] over the kept sequences of every rank."""
    per_seq = logits.float().flatten(1, -2)  # [B, n, K]
    s = torch.cat([(per_seq.sum(1) * keep[:, None]).sum(0), (keep.sum() * per_seq.shape[1]).reshape(1)])
    s = _all_reduce_sum(s)
    batch_center = s[:-1] / s[-1].clamp(min=1)
    center.mul_(momentum).add_(batch_center.reshape(center.shape) * (1 - momentum))


def prototype_ce(student_logits: Tensor, teacher_logits: Tensor, center: Tensor, student_temp: float,
                 teacher_temp: float) -> Tensor:
    """Per-token cross-entropy of softmax((teacher - center) / t_t) against log_softmax(student / t_s)."""
    t = F.softmax((teacher_logits.float() - center) / teacher_temp, dim=-1)
    s = F.log_softmax(student_logits.float() / student_temp, dim=-1)
    return -(t * s).sum(dim=-1)


def rollout(previous: Tensor, motion: Tensor, target: Tensor, n: int = 1) -> tuple[Tensor, Tensor, Tensor]:
    """n-step prediction (`rollout_n_frames`): F_t + sum of the n motions predicts F_{t+n}."""
    if n <= 1:
        return previous, motion, target
    T = previous.shape[1]
    csum = torch.cat([torch.zeros_like(motion[:, :1]), motion.cumsum(dim=1)], dim=1)
    return previous[:, :T - n + 1], csum[:, n:] - csum[:, :-n], target[:, n - 1:]


# ----------------------------------------------------------------------------- the model

class TDV(nn.Module):
    """Frame encoder, motion encoder + projection, prototype head (trained); EMA teacher encoder and head.

    `forward(video)` takes normalised clips [B, 3, T, H, W] and returns (loss, metrics).
    """

    def __init__(self, frame_encoder: VisionTransformer, motion_encoder: VisionTransformer, head: DINOHead,
                 teacher_head: DINOHead, *, recon_weight: float = 1.5, dino_weight: float = 0.75,
                 ibot_weight: float = 0.75, student_temp: float = 0.1, teacher_temp: float = 0.1,
                 center_momentum: float = 0.9, recon_centering: bool = False,
                 recon_temps: tuple[float, float] = (1.0, 1.0), recon_center_momentum: float = 0.99,
                 static_threshold: float = 0.0, rollout: int = 1):
        super().__init__()
        self.frame_encoder = frame_encoder
        self.motion_encoder = motion_encoder
        self.motion_proj = nn.Linear(motion_encoder.embed_dim, frame_encoder.embed_dim)
        self.head = head
        self.teacher_encoder = copy.deepcopy(frame_encoder)
        self.teacher_head = teacher_head
        for p in list(self.teacher_encoder.parameters()) + list(self.teacher_head.parameters()):
            p.requires_grad_(False)
        k = head.weight_v.shape[0]
        self.register_buffer("center", torch.zeros(1, k))
        self.register_buffer("recon_center", torch.zeros(1, frame_encoder.embed_dim))
        self.recon_weight, self.dino_weight, self.ibot_weight = recon_weight, dino_weight, ibot_weight
        self.student_temp, self.teacher_temp = student_temp, teacher_temp
        self.center_momentum = center_momentum
        self.recon_centering, self.recon_temps = recon_centering, tuple(recon_temps)
        self.recon_center_momentum = recon_center_momentum
        self.static_threshold, self.rollout = static_threshold, int(rollout)

    def encode(self, encoder: VisionTransformer, frames: Tensor, condition: Tensor | None = None) -> Tensor:
        """frames [B, T, 3, H, W] -> tokens [B, T, 1 + N, D]."""
        B, T = frames.shape[:2]
        cond = None if condition is None else condition.flatten(0, 1)
        out = encoder(frames.flatten(0, 1), condition=cond)
        return out.reshape(B, T, *out.shape[1:])

    def motion(self, rgb_diff: Tensor, previous: Tensor) -> Tensor:
        """Motion tokens [B, T-1, 1 + N, D] of RGB differences, conditioned on the patch tokens of x_t."""
        cond = previous[:, :, self.frame_encoder.num_prefix_tokens:]  # --ignore_prefix_tokens_in_condition
        return self.motion_proj(self.encode(self.motion_encoder, rgb_diff, cond))

    def forward(self, video: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        frames = video.transpose(1, 2)  # [B, T, 3, H, W]
        rgb_diff = frames[:, 1:] - frames[:, :-1]
        if self.static_threshold > 0:
            keep = (rgb_diff.detach().abs().float().mean(dim=(1, 2, 3, 4)) > self.static_threshold).float()
        else:
            keep = torch.ones(frames.shape[0], device=video.device)
        n_global = _all_reduce_sum(keep.sum().detach().clone())

        previous = self.encode(self.frame_encoder, frames[:, :-1])
        with torch.no_grad():
            target = self.encode(self.teacher_encoder, frames[:, 1:])
        motion = self.motion(rgb_diff, previous)
        previous, motion, target = rollout(previous, motion, target, self.rollout)
        predicted = previous + motion
        loss, metrics = self.losses(predicted, target, keep, n_global)
        with torch.no_grad():
            metrics["baseline_mse"] = masked_mean(
                (previous.float() - target.float()).pow(2).flatten(1).mean(1), keep, n_global)
            metrics["kept_sequences"] = n_global
        return loss, metrics

    def losses(self, predicted: Tensor, target: Tensor, keep: Tensor, n_global: Tensor
               ) -> tuple[Tensor, dict[str, Tensor]]:
        """The weighted sum of the three terms for predicted / target tokens [B, T, 1 + N, D]."""
        target = target.detach()
        # -- reconstruction (CenterSharpReconstructionLoss, MSE)
        tgt, pred = target.float(), predicted.float()
        if self.recon_centering:
            tgt = (tgt - self.recon_center) / self.recon_temps[1]
            pred = pred / self.recon_temps[0]
        recon = masked_mean((pred - tgt).pow(2).flatten(1).mean(1), keep, n_global)
        if self.recon_centering:
            update_center(self.recon_center, target, keep, self.recon_center_momentum)
        # -- DINO on the CLS token, iBOT on the patch tokens: one head, one centre
        p = self.frame_encoder.num_prefix_tokens
        with torch.no_grad():
            t_cls = self.teacher_head(target[:, :, 0])
            t_patch = self.teacher_head(target[:, :, p:])
        s_cls = self.head(predicted[:, :, 0])
        dino = masked_mean(prototype_ce(s_cls, t_cls, self.center, self.student_temp, self.teacher_temp)
                           .mean(1), keep, n_global)
        update_center(self.center, t_cls, keep, self.center_momentum)
        s_patch = self.head(predicted[:, :, p:])
        ibot = masked_mean(prototype_ce(s_patch, t_patch, self.center, self.student_temp, self.teacher_temp)
                           .flatten(1).mean(1), keep, n_global)
        update_center(self.center, t_patch, keep, self.center_momentum)
        loss = self.recon_weight * recon + self.dino_weight * dino + self.ibot_weight * ibot
        return loss, {"mse_loss": recon.detach(), "dino_loss": dino.detach(), "ibot_loss": ibot.detach()}

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """teacher <- momentum * teacher + (1 - momentum) * student, for the encoder and the head."""
        from vidcache.pretrain.vjepa import ema_update

        ema_update(self.teacher_encoder, self.frame_encoder, momentum)
        ema_update(self.teacher_head, self.head, momentum)

    def param_groups(self, motion_lr_scale: float) -> list[dict]:
        """Frame encoder and head at the base lr, motion encoder and projection at `motion_lr_scale` times
        it; weight decay on every parameter (the recipe's `configure_optimizers_vision`)."""
        def trainable(*mods: nn.Module) -> list[Tensor]:
            return [p for m in mods for p in m.parameters() if p.requires_grad]

        return [{"params": trainable(self.frame_encoder, self.head), "lr_scale": 1.0, "apply_wd": True},
                {"params": trainable(self.motion_encoder, self.motion_proj), "lr_scale": float(motion_lr_scale),
                 "apply_wd": True}]


def build_tdv(model: str, *, img_size: int, patch_size: int = 16, motion_model: str | None = None,
              motion_depth: int | None = None, prototypes: int = 256, head_hidden: int = 256,
              head_bottleneck: int = 64, head_layers: int = 3, seed: int = 0, **loss_options: Any) -> TDV:
    """Frame encoder of a named size (with a CLS token), motion encoder, heads; identical for a seed.

    The teacher head starts from its own draw, as the recipe builds it anew (`get_teacher_encoder`);
    the teacher encoder starts as a copy of the frame encoder.
    """
    from vidcache.models.vit import VIT_SIZES

    motion_model = motion_model or model
    with torch.random.fork_rng(devices=[]):  # module construction draws from the global RNG
        frame = vit_from_size(model, img_size=img_size, patch_size=patch_size, num_frames=1, cls_token=True)
        extra = {} if motion_depth is None else {"depth": int(motion_depth)}
        motion = vit_from_size(motion_model, img_size=img_size, patch_size=patch_size, num_frames=1, cls_token=True,
                               condition_dim=VIT_SIZES[model]["embed_dim"], **extra)
        head = DINOHead(frame.embed_dim, prototypes, head_hidden, head_bottleneck, head_layers)
        teacher_head = DINOHead(frame.embed_dim, prototypes, head_hidden, head_bottleneck, head_layers)
        tdv = TDV(frame, motion, head, teacher_head, **loss_options)
    g = torch.Generator().manual_seed(int(seed))
    frame.reset_parameters(generator=g)
    motion.reset_parameters(generator=g)
    with torch.no_grad():
        w = torch.empty(tdv.motion_proj.weight.shape)
        nn.init.trunc_normal_(w, std=0.02, generator=g)
        tdv.motion_proj.weight.copy_(w)
        tdv.motion_proj.bias.zero_()
    head.reset_parameters(generator=g)
    teacher_head.reset_parameters(generator=g)
    tdv.teacher_encoder.load_state_dict(frame.state_dict())
    return tdv


# ----------------------------------------------------------------------------- the trainer plug-in

def store_fps(source: Any) -> float | None:
    """Frames per second of a code store's frames: its sampling fps, else the videos' common native fps."""
    if source.fps:
        return float(source.fps)
    fps = np.asarray(source.src_fps if source.src_fps is not None else [], dtype=np.float64)
    fps = fps[np.isfinite(fps) & (fps > 0)]
    if len(fps) == 0 or len(fps) < len(source):
        return None
    if fps.max() > fps.min() * 1.01:
        raise ConfigError([f"the code store's videos have different frame rates ({fps.min():g} to {fps.max():g} fps) "
                           "and no sampling fps; re-extract the codes with --fps N, or give --frame-stride"],
                          "pretrain config")
    return float(np.median(fps))


class TDVObjective(Objective):
    """TDV as a plug-in of the pretraining trainer (config: `TDVConfig`)."""

    name = "tdv"
    loss_label = "TDV loss (1.5 MSE + 0.75 DINO + 0.75 iBOT)"

    @staticmethod
    def frame_stride(cfg: Any, source: Any) -> int:
        """`frame_stride`, else the context's spacing in seconds times the store's fps (at least 1)."""
        if cfg.frame_stride is not None:
            return int(cfg.frame_stride)
        fps = store_fps(source)
        if fps is None:
            raise ConfigError(["the code store records no frame rate, so frame_spacing cannot become a stride; "
                               "re-extract the codes with --fps N, or give --frame-stride"], "pretrain config")
        return max(1, int(round(cfg.frame_spacing * fps)))

    @staticmethod
    def check_source(cfg: Any, source: Any, stride: int) -> list[str]:
        span = (cfg.num_frames - 1) * stride + 1
        short = int((source.num_code_frames < span).sum())
        if short:
            return [f"{short} of {len(source)} videos have fewer than the {span} code frames a context of "
                    f"{cfg.num_frames} frames at stride {stride} spans (shortest: {int(source.num_code_frames.min())}); "
                    "lower --num-frames or --frame-spacing, or extract codes with more frames (--max-frames)"]
        return []

    def build(self) -> TDV:
        cfg = self.cfg
        return build_tdv(cfg.model, img_size=self.image_size, patch_size=cfg.patch_size, motion_model=cfg.motion_model,
                         motion_depth=cfg.motion_depth, prototypes=cfg.prototypes, head_hidden=cfg.head_hidden,
                         head_bottleneck=cfg.head_bottleneck, head_layers=cfg.head_layers, seed=cfg.seed,
                         recon_weight=cfg.recon_weight, dino_weight=cfg.dino_weight, ibot_weight=cfg.ibot_weight,
                         student_temp=cfg.student_temp, teacher_temp=cfg.teacher_temp,
                         center_momentum=cfg.center_momentum, recon_centering=cfg.recon_centering,
                         recon_temps=tuple(cfg.recon_temps), static_threshold=cfg.static_threshold,
                         rollout=cfg.rollout)

    def param_groups(self) -> list[dict]:
        return self.model.param_groups(self.cfg.motion_lr_scale)

    def schedules(self, step: int) -> dict[str, float]:
        """Linear warm-up from 0, cosine to peak x final_lr_scale at schedule_steps; constant wd and EMA."""
        from vidcache.schedule import warmup_cosine

        cfg = self.cfg
        total = cfg.schedule_steps or cfg.steps
        lr = warmup_cosine(step, warmup=int(round(cfg.warmup * cfg.steps)), total=total, start=0.0, peak=cfg.lr,
                           final=cfg.lr * cfg.final_lr_scale)
        return {"lr": lr, "wd": cfg.weight_decay, "momentum": cfg.ema}

    def after_step(self, momentum: float) -> None:
        self.model.update_target(momentum)

    def checkpoint(self) -> dict[str, Any]:
        m = self.model
        return {"model_config": m.frame_encoder.config, "target_encoder": m.teacher_encoder.state_dict(),
                "encoder": m.frame_encoder.state_dict(), "motion_config": m.motion_encoder.config,
                "motion_encoder": m.motion_encoder.state_dict(), "motion_proj": m.motion_proj.state_dict(),
                "head": m.head.state_dict(), "teacher_head": m.teacher_head.state_dict(),
                "centers": {"center": m.center.clone(), "recon_center": m.recon_center.clone()}}

    def load(self, ckpt: dict) -> None:
        m = self.model
        m.frame_encoder.load_state_dict(ckpt["encoder"])
        m.teacher_encoder.load_state_dict(ckpt["target_encoder"])
        m.motion_encoder.load_state_dict(ckpt["motion_encoder"])
        m.motion_proj.load_state_dict(ckpt["motion_proj"])
        m.head.load_state_dict(ckpt["head"])
        m.teacher_head.load_state_dict(ckpt["teacher_head"])
        with torch.no_grad():
            m.center.copy_(ckpt["centers"]["center"])
            m.recon_center.copy_(ckpt["centers"]["recon_center"])
