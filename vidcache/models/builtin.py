"""Built-in backbones: `tiny`, `tiny_frame`, `pixels`, and the `vjepa:`, `vidcache:` and `torchscript:` loaders."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidcache.errors import ConfigError, VidcacheError
from vidcache.models.backbone import IMAGENET_MEAN, IMAGENET_STD, Backbone, FrameBackbone, check_video
from vidcache.models.checkpoint import (
    load_checkpoint,
    load_state_dict_strict,
    read_vidcache_checkpoint,
    strip_prefixes,
)
from vidcache.models.registry import register_backbone, register_prefix
from vidcache.models.vit import VisionTransformer, vit_from_size


def _pool(tokens: Tensor, mode: str) -> Tensor:
    if mode == "max_abs":
        return tokens.abs().amax(dim=1)
    return tokens.mean(dim=1)


def _describe_pool(described: dict[str, Any], mode: str) -> dict[str, Any]:
    # Mean pooling is every backbone's default, so it adds no key and earlier store hashes hold.
    return described if mode == "mean" else {**described, "pool": mode}


class VideoViTBackbone(Backbone):
    """A video VisionTransformer as a backbone; tokens are the ViT's normed outputs.

    `pool_mode` "mean" (the default) averages the tokens; "max_abs" takes each channel's largest
    magnitude over the tokens, which keeps what a small moving object does to a few tokens.
    """

    pool_mode: str = "mean"

    def __init__(self, vit: VisionTransformer, *, num_frames: int | None = None, frame_stride: int = 1,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        if not vit.is_video:
            raise ValueError("VideoViTBackbone needs a video ViT (num_frames > 1); use FrameViTBackbone")
        num_frames = num_frames or vit.num_frames
        if num_frames % vit.tubelet_size:
            raise VidcacheError(f"num_frames {num_frames} is not a multiple of the tubelet size {vit.tubelet_size}")
        self.vit = vit
        self.set_input_spec(embed_dim=vit.embed_dim, num_frames=num_frames,
                            image_size=vit.img_size, patch_size=vit.patch_size,
                            tubelet_size=vit.tubelet_size, frame_stride=frame_stride, mean=mean, std=std)

    def forward_features(self, video: Tensor) -> Tensor:
        check_video(video)
        return self.vit(video)

    def pool(self, tokens: Tensor) -> Tensor:
        return _pool(tokens, self.pool_mode)

    def describe(self) -> dict[str, Any]:
        return _describe_pool(super().describe(), self.pool_mode)


FRAME_FEATURES = ("mean", "cls", "cls_concat")


class FrameViTBackbone(FrameBackbone):
    """An image VisionTransformer run on each frame: no token ever sees another frame.

    `feature` says what a ViT with a class token (TDV's frame encoder) gives:
    - "mean": its patch tokens, `(T, h, w)` of them, pooled by mean (the class token is left out);
    - "cls": the class token of each frame as the tokens (`(T, 1, 1)`), their mean as the embedding;
    - "cls_concat": the frames' class tokens concatenated into one `T * D` embedding (TDV's linear
      probe with `frame_aggregation="concat"`, ninaddaithankar/tdv `eval/probes/module.py`); the clip
      length is then fixed to `num_frames`.

    With feature "mean" and a class token the backbone declares `has_cls`: extraction's named CLS
    features (`--features cls`, `lastN`, ..., docs/store.md) read the class token of each frame
    beside the patch tokens. With feature "cls" / "cls_concat" the class token already is the
    backbone's feature, and a ViT without one has nothing to give: both declare no CLS.
    """

    pool_mode: str = "mean"

    def __init__(self, vit: VisionTransformer, *, num_frames: int = 8, frame_stride: int = 1,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 feature: str = "mean"):
        super().__init__()
        if vit.is_video:
            raise ValueError("FrameViTBackbone needs an image ViT (num_frames == 1)")
        if feature not in FRAME_FEATURES:
            raise VidcacheError(f"feature must be one of {', '.join(FRAME_FEATURES)}, got {feature!r}")
        prefix = getattr(vit, "num_prefix_tokens", 0)
        if feature != "mean" and not prefix:
            raise VidcacheError(f"feature {feature!r} needs a ViT with a class token (a TDV checkpoint); "
                                "this one has none, use feature=mean")
        self.vit, self.feature, self.prefix = vit, feature, prefix
        self.has_cls = bool(prefix) and feature == "mean"
        dim, patch, tubelet = vit.embed_dim, vit.patch_size, 1
        if feature == "cls":
            patch = vit.img_size
        elif feature == "cls_concat":
            dim, patch, tubelet = vit.embed_dim * num_frames, vit.img_size, num_frames
        self.set_input_spec(embed_dim=dim, num_frames=num_frames, image_size=vit.img_size,
                            patch_size=patch, tubelet_size=tubelet, frame_stride=frame_stride,
                            mean=mean, std=std)

    def encode_frames(self, frames: Tensor) -> Tensor:
        out = self.vit(frames)
        return out[:, :1] if self.feature != "mean" else out[:, self.prefix:]

    def encode_frames_with_cls(self, frames: Tensor, blocks: int) -> tuple[Tensor, Tensor]:
        if not self.has_cls:
            return super().encode_frames_with_cls(frames, blocks)
        outs = self.vit.forward_last_blocks(frames, blocks)
        return outs[-1][:, self.prefix:], torch.stack([o[:, 0] for o in outs], dim=1)

    def forward_features(self, video: Tensor) -> Tensor:
        tokens = super().forward_features(video)
        if self.feature == "cls_concat":
            if video.shape[2] != self.num_frames:
                raise VidcacheError(f"feature cls_concat concatenates {self.num_frames} frames; got clips of "
                                    f"{video.shape[2]} (use --clip-len {self.num_frames} or feature=cls)")
            return tokens.reshape(tokens.shape[0], 1, -1)
        return tokens

    def token_grid(self, T: int, H: int, W: int) -> tuple[int, int, int]:
        if self.feature == "cls_concat":
            return 1, 1, 1
        if self.feature == "cls":
            return T, 1, 1
        return super().token_grid(T, H, W)

    def pool(self, tokens: Tensor) -> Tensor:
        return _pool(tokens, self.pool_mode)

    def describe(self) -> dict[str, Any]:
        d = _describe_pool(super().describe(), self.pool_mode)
        return d if self.feature == "mean" else {**d, "feature": self.feature}


class MotionViTBackbone(Backbone):
    """TDV's motion encoder on a clip: for each pair of consecutive frames, the projected motion tokens
    W g(x_{t+1} - x_t | patch tokens of f(x_t)), as in training (ninaddaithankar/tdv `model/cv/tdv/tdv.py`).

    A clip of T frames gives T - 1 motion steps: tokens `(T - 1, h, w)` (patch tokens), or with
    feature "cls" the motion class token of each step `(T - 1, 1, 1)`; the embedding is their mean.
    With feature "mean" it declares `has_cls`: the named CLS features are the projected motion class
    tokens of the last blocks (each after the final norm), averaged over the steps.
    """

    def __init__(self, frame: VisionTransformer, motion: VisionTransformer, proj: nn.Linear, *, num_frames: int,
                 frame_stride: int = 1, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 feature: str = "mean"):
        super().__init__()
        if feature not in ("mean", "cls"):
            raise VidcacheError(f"the motion encoder's feature must be mean or cls, got {feature!r}")
        if num_frames < 2:
            raise VidcacheError("the motion encoder needs clips of at least 2 frames")
        self.frame, self.motion, self.proj, self.feature = frame, motion, proj, feature
        self.has_cls = bool(motion.num_prefix_tokens) and feature == "mean"
        self.set_input_spec(embed_dim=proj.out_features, num_frames=num_frames, image_size=frame.img_size,
                            patch_size=frame.patch_size if feature == "mean" else frame.img_size, tubelet_size=1,
                            frame_stride=frame_stride, mean=mean, std=std)

    def _motion(self, video: Tensor, blocks: int) -> list[Tensor]:
        """The projected motion tokens [B * (T - 1), 1 + N, D] of the last `blocks` blocks."""
        check_video(video)
        B, C, T, H, W = video.shape
        if T < 2:
            raise VidcacheError("the motion encoder needs clips of at least 2 frames")
        frames = video.transpose(1, 2)
        prev = frames[:, :-1].reshape(B * (T - 1), C, H, W)
        diff = (frames[:, 1:] - frames[:, :-1]).reshape(B * (T - 1), C, H, W)
        cond = self.frame(prev)[:, self.frame.num_prefix_tokens:]
        return [self.proj(o) for o in self.motion.forward_last_blocks(diff, blocks, condition=cond)]

    def forward_features(self, video: Tensor) -> Tensor:
        B, T = video.shape[0], video.shape[2]
        out = self._motion(video, 1)[-1]
        out = out[:, :1] if self.feature == "cls" else out[:, self.motion.num_prefix_tokens:]
        return out.reshape(B, (T - 1) * out.shape[1], out.shape[2])

    def forward_with_cls(self, video: Tensor, blocks: int) -> tuple[Tensor, Tensor]:
        if not self.has_cls:
            return super().forward_with_cls(video, blocks)
        B, T = video.shape[0], video.shape[2]
        outs = self._motion(video, blocks)
        tokens = outs[-1][:, self.motion.num_prefix_tokens:]
        cls = torch.stack([o[:, 0] for o in outs], dim=1)  # [B * (T - 1), blocks, D]
        return (tokens.reshape(B, (T - 1) * tokens.shape[1], tokens.shape[2]),
                cls.reshape(B, T - 1, *cls.shape[1:]).mean(1))

    def token_grid(self, T: int, H: int, W: int) -> tuple[int, int, int]:
        if self.feature == "cls":
            return max(T - 1, 1), 1, 1
        return max(T - 1, 1), H // self.frame.patch_size, W // self.frame.patch_size

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "part": "motion", "feature": self.feature}


def _seeded_vit(seed: int, size: str, **kwargs: Any) -> VisionTransformer:
    # fork_rng: building the modules draws from the global RNG before reset_parameters overwrites
    # every weight; the caller's random stream must not depend on whether it built a backbone.
    with torch.random.fork_rng(devices=[]):
        try:
            vit = vit_from_size(size, **kwargs)
        except ValueError as err:  # a size or shape option that does not fit
            raise ConfigError([str(err)], "backbone options") from err
    vit.reset_parameters(generator=torch.Generator().manual_seed(int(seed)))
    return vit


def filter_bank(patch_size: int, tubelet_size: int = 1, speed: float = 1.5) -> Tensor:
    """Fixed spatio-temporal filters over one RGB tubelet: `[n, 3, tubelet_size, patch_size, patch_size]`.

    Each filter has unit L2 norm. In order:

    - luminance: Gaussian-windowed spatial derivatives (G, Gx, Gy, Gxx, Gyy, Gxy; window sigma a
      quarter of the patch) times temporal polynomials (constant, linear, quadratic; as many as the
      tubelet has frames, up to 3): edges, blobs and their change over time;
    - luminance motion (tubelets of 2+ frames): quadrature pairs (cosine, sine) of a grating of one
      cycle per patch drifting at `speed` pixels per frame right, down, left and up. A pair's
      energy is direction selective (Adelson & Bergen's motion energy), so a magnitude pooled over
      tokens tells opposite motions apart where a linear filter's mean cannot;
    - colour opponents (red-green, blue-yellow) times G, Gx, Gy and the first two temporal terms.

    That is 38 filters for a 4 x 8 x 8 tubelet and 12 for a single frame.
    """
    p, t = patch_size, tubelet_size
    c = (torch.arange(p, dtype=torch.float64) - (p - 1) / 2) / (p / 4)
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    g = torch.exp(-(xx ** 2 + yy ** 2) / 2)
    spatial = [g, xx * g, yy * g, (xx ** 2 - 1) * g, (yy ** 2 - 1) * g, xx * yy * g]
    tt = torch.arange(t, dtype=torch.float64) - (t - 1) / 2
    temporal = [torch.ones(t), tt, tt ** 2 - (tt ** 2).mean()][:min(t, 3)]
    lum = torch.ones(3, dtype=torch.float64)
    rg = torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64)
    by = torch.tensor([-0.5, -0.5, 1.0], dtype=torch.float64)

    def lift(colour: Tensor, st: Tensor) -> Tensor:  # colour [3] x space-time [t, p, p]
        return colour[:, None, None, None] * st[None]

    filters = [lift(lum, q[:, None, None] * f[None]) for q in temporal for f in spatial]
    if t > 1:
        px = torch.arange(p, dtype=torch.float64) - (p - 1) / 2
        py, qx = torch.meshgrid(px, px, indexing="ij")
        window = torch.exp(-(qx ** 2 + py ** 2) / (2 * (p / 3) ** 2))
        k = 2 * math.pi / p
        for ux, uy in ((1, 0), (0, 1), (-1, 0), (0, -1)):
            phase = k * ((qx * ux + py * uy)[None] - speed * tt[:, None, None])
            filters += [lift(lum, phase.cos() * window), lift(lum, phase.sin() * window)]
    for colour in (rg, by):
        filters += [lift(colour, q[:, None, None] * f[None]) for q in temporal[:2] for f in spatial[:3]]
    bank = torch.stack(filters)
    return (bank / bank.flatten(1).norm(dim=1).view(-1, 1, 1, 1, 1)).float()


# Filter outputs are scaled well above the sin-cos position table (values in [-1, 1]) that the
# ViT adds next, so a token says what its tubelet holds rather than mostly where it is.
_FILTER_GAIN = 10.0


@torch.no_grad()
def init_random_features(vit: VisionTransformer, seed: int, gain: float = _FILTER_GAIN) -> None:
    """Make a randomly initialised ViT's patch embedding a fixed filter bank plus random filters.

    jepa's init (std 0.02) leaves an untrained ViT close to linear, so the mean of its tokens is a
    linear function of the mean tubelet: no shape, no motion. Here the patch embedding's first
    channels are `filter_bank` (motion-energy and derivative filters), the others random filters
    with fan-in scaled weights, all multiplied by `gain`; the transformer blocks keep their jepa
    init. Deterministic for a seed. Used only by the built-in random backbones.
    """
    w = vit.patch_embed.proj.weight  # [D, 3, t, p, p] (video) or [D, 3, p, p] (image)
    video = w.dim() == 5
    t = w.shape[2] if video else 1
    p = w.shape[-1]
    bank = filter_bank(p, t)[: w.shape[0]]
    fan_in = w[0].numel()
    gen = torch.Generator().manual_seed(int(seed))
    new = torch.randn(w.shape, generator=gen) / math.sqrt(fan_in)
    new[: len(bank)] = bank if video else bank[:, :, 0]
    w.copy_(new * gain)
    vit.patch_embed.proj.bias.zero_()


@register_backbone("tiny")
def tiny(seed: int = 0, image_size: int = 64, num_frames: int = 8, frame_stride: int = 2,
         patch_size: int = 8, tubelet_size: int = 4, size: str = "vit_micro") -> Backbone:
    """A small randomly initialised video ViT (96-d, 4 blocks by default), identical for a seed.

    Sized for a CPU demo: an 8 x 64 x 64 clip gives a 2 x 8 x 8 token grid (128 tokens) for about
    0.16 GFLOPs, a few ms per clip; tubelets of 4 frames halve the cost of tubelets of 2.

    Untrained yet informative: the patch embedding starts as a bank of motion-energy and
    derivative filters (`init_random_features`) and the clip embedding is each channel's largest
    magnitude over the tokens (`pool_mode="max_abs"`), so linear and kNN probes see the direction
    of motion, which the mean of a jepa-initialised random ViT's tokens does not carry.
    """
    vit = _seeded_vit(seed, size, img_size=image_size, num_frames=num_frames, patch_size=patch_size,
                      tubelet_size=tubelet_size)
    init_random_features(vit, seed)
    model = VideoViTBackbone(vit, frame_stride=frame_stride)
    model.pool_mode = "max_abs"
    return model


@register_backbone("tiny_frame")
def tiny_frame(seed: int = 0, image_size: int = 64, num_frames: int = 8, frame_stride: int = 2,
               patch_size: int = 16, size: str = "vit_micro") -> Backbone:
    """Per-frame counterpart of `tiny`: an image ViT applied to each frame, with no time position.

    With 16-pixel patches it also yields 128 tokens per clip (8 frames x 4 x 4), at a similar cost.
    Its patch embedding starts with the single-frame part of `filter_bank` and it pools by
    largest magnitude, as `tiny` does.

    Its pooled clip embedding is symmetric in the frames, so it cannot tell a clip from its
    reverse: motion is visible only by comparing clips.
    """
    vit = _seeded_vit(seed, size, img_size=image_size, num_frames=1, patch_size=patch_size)
    init_random_features(vit, seed)
    model = FrameViTBackbone(vit, num_frames=num_frames, frame_stride=frame_stride)
    model.pool_mode = "max_abs"
    return model


class PixelBackbone(FrameBackbone):
    """Each frame average-pooled to a `grid x grid` RGB thumbnail: one `3 * grid**2`-d token per frame.

    The classic no-learning baseline. Channels are in (channel, row, column) order. It has no
    weights; its clip embedding, the mean thumbnail over the clip's frames, keeps where things are
    but not in which order they came, so motion shows only across clips.
    """

    def __init__(self, grid: int = 8, image_size: int = 64, num_frames: int = 8, frame_stride: int = 2):
        super().__init__()
        if grid < 1 or image_size % grid:
            raise ConfigError([f"image_size {image_size} must be a multiple of grid {grid} (grid >= 1)"],
                              "backbone options")
        self.grid = grid
        self.set_input_spec(embed_dim=3 * grid * grid, num_frames=num_frames, image_size=image_size,
                            patch_size=image_size, tubelet_size=1, frame_stride=frame_stride)

    def encode_frames(self, frames: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(frames, self.grid).flatten(1)[:, None]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "grid": self.grid}


@register_backbone("pixels")
def pixels(grid: int = 8, image_size: int = 64, num_frames: int = 8, frame_stride: int = 2) -> Backbone:
    """Per-frame `grid x grid` RGB thumbnails (192-d by default): a deterministic pixel baseline."""
    return PixelBackbone(grid=grid, image_size=image_size, num_frames=num_frames, frame_stride=frame_stride)


# --- facebookresearch/jepa checkpoints -----------------------------------------------------------

_HEADS_BY_DIM = {96: 3, 192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16, 1664: 16}
# Tried in order when the checkpoint alone does not fix the image size (the position table only
# gives frames x height x width); the released V-JEPA models use 224 and 384.
_IMAGE_SIZES = (224, 384, 256, 448, 512, 320, 288, 192, 160, 128, 112, 96, 64, 32)


def _pick_encoder(ckpt: Any, which: str | None, path: str) -> dict:
    if not isinstance(ckpt, Mapping):
        raise VidcacheError(f"{path} does not hold a state dict or a jepa checkpoint dict")
    if which is not None:
        if not isinstance(ckpt.get(which), Mapping):
            have = [k for k, v in ckpt.items() if isinstance(v, Mapping)]
            raise VidcacheError(f"{path} has no {which!r} weights (it has: {', '.join(have) or 'none'})")
        return dict(ckpt[which])
    for key in ("target_encoder", "encoder"):
        if isinstance(ckpt.get(key), Mapping):
            return dict(ckpt[key])
    if any(isinstance(v, Tensor) for v in ckpt.values()):
        return dict(ckpt)  # a bare state dict
    raise VidcacheError(f"{path} has neither 'target_encoder' nor 'encoder' weights "
                        f"(top-level keys: {', '.join(map(str, list(ckpt)[:8]))})")


def infer_vit_config(state: Mapping[str, Tensor], *, image_size: int | None = None,
                     num_frames: int | None = None, num_heads: int | None = None) -> dict[str, Any]:
    """VisionTransformer options from a jepa-style state dict's tensor shapes.

    Width, depth, MLP ratio, qkv bias, patch and tubelet size are read from the shapes; the head
    count from the width (standard sizes) or `num_heads`; image size and trained frame count from
    the position table length: `image_size` if given, else the first usual size at which the table
    holds `num_frames` frames, else the first usual size that divides it.
    """
    def need(key: str) -> Tensor:
        if key not in state:
            raise VidcacheError(f"not a jepa VisionTransformer state dict: no {key!r} "
                                f"(keys start: {', '.join(list(state)[:5])})")
        return state[key]

    w = need("patch_embed.proj.weight")
    embed_dim, in_chans = int(w.shape[0]), int(w.shape[1])
    if w.dim() == 5:
        tubelet, patch = int(w.shape[2]), int(w.shape[3])
    elif w.dim() == 4:
        tubelet, patch = 1, int(w.shape[2])
    else:
        raise VidcacheError(f"patch_embed.proj.weight has unexpected shape {tuple(w.shape)}")
    if "pos_embed" not in state:
        raise VidcacheError("checkpoint has no 'pos_embed' table; V-JEPA 2 (RoPE) models load with the "
                            "'hf:' prefix from their Hugging Face conversion")
    n_pos = int(state["pos_embed"].shape[1])
    depth = 1 + max((int(k.split(".")[1]) for k in state if k.startswith("blocks.")), default=-1)
    if depth == 0:
        raise VidcacheError("checkpoint has no 'blocks.*' weights")
    mlp_ratio = int(need("blocks.0.mlp.fc1.weight").shape[0]) / embed_dim
    heads = num_heads or _HEADS_BY_DIM.get(embed_dim)
    if heads is None:
        raise VidcacheError(f"cannot infer the number of attention heads for width {embed_dim}; "
                            "pass num_heads")

    def frames_for(size: int) -> int | None:
        per_frame = (size // patch) ** 2
        if size % patch or n_pos % per_frame:
            return None
        return (n_pos // per_frame) * tubelet if w.dim() == 5 else 1

    if image_size is not None:
        frames = frames_for(image_size)
        if frames is None:
            raise VidcacheError(f"image_size {image_size} does not fit the checkpoint's {n_pos} positions "
                                f"with patch {patch}")
    else:
        # Prefer the size at which the table holds exactly the requested clip length.
        fitting = [s for s in _IMAGE_SIZES if frames_for(s) is not None]
        exact = [s for s in fitting if num_frames is not None and frames_for(s) == num_frames]
        image_size = (exact or fitting or [None])[0]
        if image_size is None:
            side = math.isqrt(n_pos)
            if w.dim() == 5 or side * side != n_pos:
                raise VidcacheError(f"cannot infer the image size from {n_pos} positions; pass image_size")
            image_size = side * patch
        frames = frames_for(image_size)
    return dict(img_size=image_size, patch_size=patch, num_frames=frames, tubelet_size=max(tubelet, 1),
                in_chans=in_chans, embed_dim=embed_dim, depth=depth, num_heads=heads, mlp_ratio=mlp_ratio,
                qkv_bias="blocks.0.attn.qkv.bias" in state)


def _wrap_vit(vit: VisionTransformer, *, clip_frames: int | None, frame_stride: int,
              mean: Sequence[float], std: Sequence[float]) -> Backbone:
    if vit.is_video:
        return VideoViTBackbone(vit, num_frames=clip_frames, frame_stride=frame_stride, mean=mean, std=std)
    return FrameViTBackbone(vit, num_frames=clip_frames or 16, frame_stride=frame_stride, mean=mean, std=std)


@register_prefix("vjepa", "vjepa:<jepa checkpoint file>")
def load_vjepa(path: str, *, which: str | None = None, image_size: int | None = None,
               num_frames: int | None = None, num_heads: int | None = None, frame_stride: int = 4,
               mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
               trust_checkpoint: bool = False) -> Backbone:
    """A facebookresearch/jepa encoder: `target_encoder` by default (else `encoder`), loaded strictly.

    `which` picks the weights ('target_encoder' or 'encoder'); `image_size` resolves an ambiguous
    position table; `num_frames` is the clip length (default: the trained one; another length runs
    with the position table interpolated in time); `frame_stride` 4 is the V-JEPA evaluation default.
    """
    state = strip_prefixes(_pick_encoder(load_checkpoint(path, trust=trust_checkpoint), which, path))
    config = infer_vit_config(state, image_size=image_size, num_frames=num_frames, num_heads=num_heads)
    vit = VisionTransformer(**config)
    load_state_dict_strict(vit, state, path)
    return _wrap_vit(vit, clip_frames=num_frames, frame_stride=frame_stride, mean=mean, std=std)


@register_prefix("vidcache", "vidcache:<checkpoint from vidcache pretrain>[#motion]")
def load_vidcache(path: str, *, which: str = "target_encoder", num_frames: int | None = None,
                  frame_stride: int | None = None, feature: str = "mean", part: str | None = None,
                  trust_checkpoint: bool = False) -> Backbone:
    """An encoder trained by `vidcache pretrain` (see vidcache.models.checkpoint for the format).

    Normalisation and frame stride come from the checkpoint's `preprocess` entry when present.
    A TDV checkpoint loads its frame encoder as a per-frame backbone (`feature`: mean of the patch
    tokens, cls, or cls_concat; `which="encoder"` for the student instead of the EMA teacher), and
    `PATH#motion` (or `part="motion"`) its motion encoder, conditioned on the student frame encoder
    as in training.
    """
    if "#" in path:
        path, part = path.rsplit("#", 1)
    if part not in (None, "motion"):
        raise VidcacheError(f"unknown checkpoint part {part!r} (a TDV checkpoint has #motion)")
    ckpt = read_vidcache_checkpoint(path, trust=trust_checkpoint)
    pre = ckpt.get("preprocess") or {}
    stride = frame_stride if frame_stride is not None else int(pre.get("frame_stride", 1))
    mean, std = pre.get("mean", IMAGENET_MEAN), pre.get("std", IMAGENET_STD)
    is_tdv = ckpt.get("objective") == "tdv"
    clip_frames = num_frames or (int(pre["num_frames"]) if is_tdv and pre.get("num_frames") else None)

    def build(config: Any, state: Any, what: str) -> VisionTransformer:
        try:
            vit = VisionTransformer(**config)
        except (TypeError, ValueError) as err:
            raise VidcacheError(f"vidcache checkpoint {path} has an invalid {what}: {err}") from err
        load_state_dict_strict(vit, strip_prefixes(state), path)
        return vit

    if part == "motion":
        if not is_tdv or not isinstance(ckpt.get("motion_encoder"), Mapping):
            raise VidcacheError(f"{path} has no motion encoder (#motion is for checkpoints of `vidcache pretrain tdv`)")
        frame = build(ckpt["model_config"], ckpt["encoder"], "model_config")
        motion = build(ckpt["motion_config"], ckpt["motion_encoder"], "motion_config")
        w = ckpt["motion_proj"]["weight"]
        proj = nn.Linear(int(w.shape[1]), int(w.shape[0]))
        proj.load_state_dict(ckpt["motion_proj"])
        return MotionViTBackbone(frame, motion, proj, num_frames=clip_frames or 16, frame_stride=stride,
                                 mean=mean, std=std, feature=feature)
    if not isinstance(ckpt.get(which), Mapping):
        raise VidcacheError(f"vidcache checkpoint {path} has no {which!r} weights")
    vit = build(ckpt["model_config"], ckpt[which], "model_config")
    if vit.is_video:
        if feature != "mean":
            raise VidcacheError(f"feature {feature!r} is for per-frame (TDV) checkpoints; {path} is a video ViT")
        return VideoViTBackbone(vit, num_frames=clip_frames, frame_stride=stride, mean=mean, std=std)
    return FrameViTBackbone(vit, num_frames=clip_frames or 16, frame_stride=stride, mean=mean, std=std,
                            feature=feature)


# --- TorchScript ---------------------------------------------------------------------------------

_TS_FIELDS = ("embed_dim", "num_frames", "image_size", "patch_size", "tubelet_size", "frame_stride",
              "mean", "std")


class TorchScriptBackbone(Backbone):
    """A scripted module mapping normalised clips `[B, 3, T, H, W]` to tokens `[B, L, D]` or `[B, D]`.

    Its input spec comes from, in increasing priority: attributes of the scripted module with the
    names in `_TS_FIELDS`, a JSON sidecar (`<file>.json` or the file name with `.json` instead of its
    suffix), and explicit options. `embed_dim`, `num_frames` and `image_size` are required;
    `patch_size` / `tubelet_size` default to the whole frame / clip (one token), and must be given
    when the module returns more tokens, so that `token_grid` multiplies out to L.
    """

    def __init__(self, module: nn.Module, spec: Mapping[str, Any]):
        super().__init__()
        self.module = module
        self.set_input_spec(**spec)

    def forward_features(self, video: Tensor) -> Tensor:
        check_video(video)
        out = self.module(video)
        if out.dim() == 2:
            out = out[:, None]
        if out.dim() != 3 or out.shape[-1] != self.embed_dim:
            raise VidcacheError(f"scripted backbone returned shape {tuple(out.shape)}; expected "
                                f"[B, L, {self.embed_dim}] or [B, {self.embed_dim}]")
        t, h, w = self.token_grid(*video.shape[2:])
        if out.shape[1] != t * h * w:
            raise VidcacheError(f"scripted backbone returned {out.shape[1]} tokens but its patch_size "
                                f"{self.patch_size} / tubelet_size {self.tubelet_size} give a {t}x{h}x{w} grid; "
                                "set patch_size and tubelet_size in its metadata")
        return out


@register_prefix("torchscript", "torchscript:<scripted module file>")
def load_torchscript(path: str, **options: Any) -> Backbone:
    """Load a `torch.jit.save`d module; options override its attributes and JSON sidecar."""
    file = Path(path)
    if not file.is_file():
        raise VidcacheError(f"TorchScript file {file} does not exist")
    options.pop("trust_checkpoint", None)  # a TorchScript archive holds no pickled code to trust
    unknown = sorted(set(options) - set(_TS_FIELDS))
    if unknown:
        raise VidcacheError(f"unknown option(s) {', '.join(unknown)} for torchscript: "
                            f"(options: {', '.join(_TS_FIELDS)})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated, still loads
            module = torch.jit.load(str(file), map_location="cpu")
    except RuntimeError as err:
        raise VidcacheError(f"cannot load {file} as TorchScript: {str(err).splitlines()[0]}") from err
    spec: dict[str, Any] = {}
    for name in _TS_FIELDS:
        if hasattr(module, name):
            value = getattr(module, name)
            spec[name] = tuple(value) if isinstance(value, (list, tuple)) else value
    for sidecar in (file.with_name(file.name + ".json"), file.with_suffix(".json")):
        if sidecar.is_file():
            try:
                meta = json.loads(sidecar.read_text())
            except json.JSONDecodeError as err:
                raise VidcacheError(f"sidecar {sidecar} is not valid JSON: {err}") from err
            spec.update({k: v for k, v in meta.items() if k in _TS_FIELDS})
            break
    spec.update(options)
    missing = [k for k in ("embed_dim", "num_frames", "image_size") if k not in spec]
    if missing:
        raise VidcacheError(f"TorchScript backbone {file} does not say its {', '.join(missing)}: add them as "
                            f"module attributes, in {file.name}.json, or as options")
    spec.setdefault("patch_size", spec["image_size"])
    spec.setdefault("tubelet_size", spec["num_frames"])
    return TorchScriptBackbone(module, spec)
