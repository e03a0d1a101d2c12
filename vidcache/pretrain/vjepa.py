"""The V-JEPA objective (Bardes et al. 2024): predict masked token features of an EMA target encoder.

    context encoder  E(x restricted to the visible tokens)        -- token dropping, not mask tokens
    predictor        P(E(...), mask tokens at the hidden positions) -- a narrow ViT
    target           layer_norm(E_ema(x)) at the hidden positions   -- no gradient
    loss             mean |P - target|  (L1), averaged over the masks (short- and long-range)

The target encoder is a copy of the context encoder updated as an exponential moving average
whose momentum rises linearly (0.998 -> 1.0); lr warms up linearly and then follows a cosine, and
weight decay follows a cosine from its start to its final value. All schedules are functions of the
step alone, so a resumed run needs only the step to continue them.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidcache.models.vit import Block, VisionTransformer, apply_masks, get_3d_sincos_pos_embed
from vidcache.pretrain.masks import MultiBlockMasks
from vidcache.pretrain.objective import Objective
from vidcache.schedule import cosine, linear, warmup_cosine


class Predictor(nn.Module):
    """Narrow ViT: context tokens + learnable mask tokens (one per mask kind) at the hidden positions.

    Positions are a fixed 3D sin-cos table of the predictor's width, added to both the projected
    context tokens and the mask tokens, so the predictor knows where every token sits.
    """

    def __init__(self, num_patches: int, grid_size: int, grid_depth: int, embed_dim: int,
                 predictor_embed_dim: int = 384, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 num_mask_tokens: int = 2, init_std: float = 0.02, uniform_power: bool = False):
        super().__init__()
        self.config: dict[str, Any] = dict(
            num_patches=num_patches, grid_size=grid_size, grid_depth=grid_depth, embed_dim=embed_dim,
            predictor_embed_dim=predictor_embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
            num_mask_tokens=num_mask_tokens, init_std=init_std, uniform_power=uniform_power)
        if grid_depth * grid_size ** 2 != num_patches:
            raise ValueError(f"token grid {grid_depth}x{grid_size}x{grid_size} does not hold {num_patches} tokens")
        self.init_std = init_std
        self.predictor_embed = nn.Linear(embed_dim, predictor_embed_dim)
        self.mask_tokens = nn.ParameterList(
            [nn.Parameter(torch.zeros(1, 1, predictor_embed_dim)) for _ in range(num_mask_tokens)])
        table = get_3d_sincos_pos_embed(predictor_embed_dim, grid_size, grid_depth, uniform_power)
        self.predictor_pos_embed = nn.Parameter(table.float().unsqueeze(0), requires_grad=False)
        self.predictor_blocks = nn.ModuleList(
            [Block(predictor_embed_dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.predictor_norm = nn.LayerNorm(predictor_embed_dim, eps=1e-6)
        self.predictor_proj = nn.Linear(predictor_embed_dim, embed_dim)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Truncated-normal weights, zero biases and mask tokens, residual outputs scaled by depth."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                w = torch.empty(m.weight.shape)
                nn.init.trunc_normal_(w, std=self.init_std, generator=generator)
                m.weight.copy_(w)
                m.bias.zero_()
            elif isinstance(m, nn.LayerNorm):
                m.weight.fill_(1.0)
                m.bias.zero_()
        for tok in self.mask_tokens:
            tok.zero_()
        for i, blk in enumerate(self.predictor_blocks, start=1):
            blk.attn.proj.weight.div_(math.sqrt(2.0 * i))
            blk.mlp.fc2.weight.div_(math.sqrt(2.0 * i))

    def forward(self, context: Tensor, masks_ctx: Tensor, masks_tgt: Tensor, mask_index: int = 0) -> Tensor:
        """context [B, Nc, D] at token indices masks_ctx [B, Nc] -> predictions [B, Nt, D] at masks_tgt."""
        b, n_ctx = context.shape[:2]
        pos = self.predictor_pos_embed.expand(b, -1, -1).to(context.dtype)
        x = self.predictor_embed(context) + apply_masks(pos, [masks_ctx])
        tokens = self.mask_tokens[mask_index % len(self.mask_tokens)].to(x.dtype)
        targets = tokens + apply_masks(pos, [masks_tgt])
        x = torch.cat([x, targets], dim=1)
        for blk in self.predictor_blocks:
            x = blk(x)
        x = self.predictor_norm(x[:, n_ctx:])
        return self.predictor_proj(x)


class VJEPA(nn.Module):
    """Context encoder + predictor (trained) and the EMA target encoder (not trained).

    `forward(video, masks_enc, masks_pred)` returns the loss; under DDP only the trained parts
    receive gradients (the target encoder's parameters have requires_grad False).
    """

    def __init__(self, encoder: VisionTransformer, predictor: Predictor):
        super().__init__()
        self.encoder = encoder
        self.predictor = predictor
        self.target_encoder = copy.deepcopy(encoder)
        for p in self.target_encoder.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def targets(self, video: Tensor) -> Tensor:
        h = self.target_encoder(video)
        return F.layer_norm(h, (h.size(-1),))

    def forward(self, video: Tensor, masks_enc: Sequence[Tensor], masks_pred: Sequence[Tensor]) -> Tensor:
        h = self.targets(video)  # computed once for every mask
        losses = []
        for i, (m_enc, m_pred) in enumerate(zip(masks_enc, masks_pred)):
            z = self.encoder(video, masks=m_enc)
            z = self.predictor(z, m_enc, m_pred, mask_index=i)
            losses.append((z.float() - apply_masks(h, [m_pred]).float()).abs().mean())
        return torch.stack(losses).mean()

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """target <- momentum * target + (1 - momentum) * encoder, for every parameter."""
        ema_update(self.target_encoder, self.encoder, momentum)


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    tp = [p for p in target.parameters()]
    op = [p.detach() for p in online.parameters()]
    torch._foreach_mul_(tp, momentum)
    torch._foreach_add_(tp, op, alpha=1.0 - momentum)


def build_vjepa(model: str, *, img_size: int, num_frames: int, patch_size: int = 16, tubelet_size: int = 2,
                pred_depth: int = 12, pred_dim: int = 384, num_mask_tokens: int = 2, seed: int = 0,
                uniform_power: bool = False) -> VJEPA:
    """Encoder of a named size (vit_micro ... vit_giant), predictor and target, identical for a seed."""
    from vidcache.models.vit import VIT_SIZES, vit_from_size

    with torch.random.fork_rng(devices=[]):  # module construction draws from the global RNG
        encoder = vit_from_size(model, img_size=img_size, num_frames=num_frames, patch_size=patch_size,
                                tubelet_size=tubelet_size, uniform_power=uniform_power)
        heads = VIT_SIZES[model]["num_heads"]
        if pred_dim % heads:
            heads = next(h for h in range(min(heads, pred_dim), 0, -1) if pred_dim % h == 0)
        predictor = Predictor(encoder.num_patches, encoder.grid_size, encoder.grid_depth, encoder.embed_dim,
                              predictor_embed_dim=pred_dim, depth=pred_depth, num_heads=heads,
                              num_mask_tokens=num_mask_tokens, uniform_power=encoder.uniform_power)
    g = torch.Generator().manual_seed(int(seed))
    encoder.reset_parameters(generator=g)
    predictor.reset_parameters(generator=g)
    return VJEPA(encoder, predictor)


def param_groups(module: nn.Module) -> list[dict]:
    """Weight decay on matrices and convolutions only; biases, norms and mask tokens go without."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or "mask_tokens" in name else decay).append(p)
    return [{"params": decay, "apply_wd": True}, {"params": no_decay, "apply_wd": False, "weight_decay": 0.0}]


# ----------------------------------------------------------------------------- training FLOPs

_FIT_POINTS = ((1, 1), (2, 1), (3, 1), (1, 2), (1, 3), (2, 2))  # (Ke, Kp): six points fix a quadratic


def _terms(ke: int, kp: int) -> list[int]:
    return [1, ke, kp, ke * ke, ke * kp, kp * kp]


def _quadratic(coef: Sequence[Any], ke: int, kp: int) -> int:
    value = sum(c * t for c, t in zip(coef, _terms(ke, kp)))
    if value != int(value):
        raise ValueError(f"the FLOPs fit is not integral at ({ke}, {kp}): {value}")
    return int(value)


def _fit_step_flops(model: VJEPA, clip: Tensor, count) -> tuple[int, list]:
    """(FLOPs of the target forward, g's coefficients) for one clip, counted on a copy of `model`."""
    from fractions import Fraction

    twin = copy.deepcopy(model)
    n = twin.encoder.num_patches

    def idx(k: int) -> Tensor:
        return (torch.arange(k, device=clip.device) % n)[None]

    def step(ke: int, kp: int) -> None:
        twin(clip, [idx(ke)], [idx(kp)]).backward()

    target = count(lambda: twin.targets(clip))
    rows = [[Fraction(t) for t in _terms(*pt)] for pt in _FIT_POINTS]
    values = [Fraction(count(lambda pt=pt: step(*pt)) - target) for pt in _FIT_POINTS]
    coef = _solve(rows, values)
    return target, coef


def _solve(a: list[list], b: list) -> list:
    """Gauss-Jordan elimination on exact fractions: x with a x = b (a square and invertible)."""
    n = len(b)
    m = [row[:] + [v] for row, v in zip(a, b)]
    for col in range(n):
        pivot = next(r for r in range(col, n) if m[r][col] != 0)
        m[col], m[pivot] = m[pivot], m[col]
        m[col] = [v / m[col][col] for v in m[col]]
        for r in range(n):
            if r != col and m[r][col] != 0:
                m[r] = [v - m[r][col] * w for v, w in zip(m[r], m[col])]
    return [row[-1] for row in m]


# ----------------------------------------------------------------------------- the trainer plug-in

class VJEPAObjective(Objective):
    """V-JEPA as a plug-in of the pretraining trainer (config: `PretrainConfig`)."""

    name = "vjepa"
    loss_label = "V-JEPA loss (L1)"

    def build(self) -> VJEPA:
        cfg = self.cfg
        model = build_vjepa(cfg.model, img_size=self.image_size, num_frames=cfg.num_frames, patch_size=cfg.patch_size,
                            tubelet_size=cfg.tubelet_size, pred_depth=cfg.pred_depth, pred_dim=cfg.pred_dim,
                            num_mask_tokens=len(cfg.mask_blocks), seed=cfg.seed, uniform_power=cfg.uniform_power)
        enc = model.encoder
        self.masker = MultiBlockMasks(enc.grid_depth, enc.grid_size, enc.grid_size, cfg.mask_specs(),
                                      adapt=cfg.mask_adapt)
        return model

    def param_groups(self) -> list[dict]:
        return [{**g, "lr_scale": 1.0} for g in param_groups(self.model)]

    def schedules(self, step: int) -> dict[str, float]:
        """jepa's app/vjepa/train.py: lr and weight decay read at step + 1 (its WarmupCosineSchedule and
        CosineWDSchedule step before each iteration), the EMA momentum at step (its generator's value
        is drawn after the step)."""
        cfg = self.cfg
        total = int(round(cfg.steps * cfg.schedule_scale))
        lr = warmup_cosine(step, warmup=int(round(cfg.warmup * cfg.steps)), total=total, start=cfg.start_lr,
                           peak=cfg.lr, final=cfg.final_lr, rule="jepa")
        wd = cosine(step, total=total, start=cfg.weight_decay, final=cfg.final_weight_decay, rule="jepa")
        momentum = linear(step, total=total, start=cfg.ema[0], final=cfg.ema[1])
        return {"lr": lr, "wd": wd, "momentum": momentum}

    def inputs(self, step: int) -> dict[str, Any]:
        """Masks drawn for the global batch from (seed, step) and sliced to this rank."""
        state = np.random.SeedSequence([int(self.cfg.seed), 2, int(step)]).generate_state(1, dtype=np.uint64)[0]
        enc, pred = self.masker(self.cfg.batch_size, torch.Generator().manual_seed(int(state)))
        take = slice(self.rank, None, self.world)
        return {"masks_enc": [m[take].to(self.device) for m in enc],
                "masks_pred": [m[take].to(self.device) for m in pred]}

    def after_step(self, momentum: float) -> None:
        self.model.update_target(momentum)

    def step_flops(self, count, video: Tensor, inputs: dict[str, Any]) -> int:
        """B x (target forward + sum over the masks of g(context tokens, target tokens)).

        Every counted op is linear in the batch, and for one clip and one mask the forward and
        backward of the encoder and predictor cost a quadratic g(Ke, Kp) in the mask's lengths
        (linear layers linear, attention quadratic in Ke and Ke + Kp). So the counter runs once per
        process on a copy of the model: the target's forward and six one-clip, one-mask steps fix
        g's six coefficients, exactly (rational arithmetic); a step then costs no counting.
        """
        if getattr(self, "_flops_fit", None) is None:
            self._flops_fit = _fit_step_flops(self.model, video[:1], count)
        target, coef = self._flops_fit
        per_clip = target + sum(_quadratic(coef, int(e.shape[1]), int(p.shape[1]))
                                for e, p in zip(inputs["masks_enc"], inputs["masks_pred"]))
        return int(video.shape[0]) * per_clip

    def checkpoint(self) -> dict[str, Any]:
        m = self.model
        return {"model_config": m.encoder.config, "target_encoder": m.target_encoder.state_dict(),
                "encoder": m.encoder.state_dict(), "predictor": m.predictor.state_dict(),
                "predictor_config": dict(m.predictor.config)}

    def load(self, ckpt: dict) -> None:
        m = self.model
        m.encoder.load_state_dict(ckpt["encoder"])
        m.target_encoder.load_state_dict(ckpt["target_encoder"])
        m.predictor.load_state_dict(ckpt["predictor"])
