"""Pretraining configs, torch-free (the CLI builds `vidcache pretrain vjepa` options from them).

`RunConfig` holds the fields every run has (code store, run directory, loader, device, checkpoints,
resume); `PretrainConfig` extends it into a V-JEPA run (`vidcache.pretrain.train.pretrain`);
`MaskSpec` is one kind of its masks (`vidcache.pretrain.masks`). The TDV objective's config,
`vidcache.pretrain.tdv_config.TDVConfig`, extends `RunConfig` too.
"""

from __future__ import annotations

from dataclasses import dataclass

from vidcache.config import field

# Encoder sizes (`vidcache.models.vit.VIT_SIZES` holds their shapes; a test keeps the two equal).
VIT_SIZE_NAMES = ("vit_micro", "vit_tiny", "vit_small", "vit_base", "vit_large", "vit_huge", "vit_giant")
LOADERS = ("codes", "mp4")
DTYPES = ("auto", "fp32", "bf16")
# Where a block shorter than the clip sits in time; 'end' hides the last steps (forecasting).
TEMPORAL_ANCHORS = ("random", "end")


@dataclass
class MaskSpec:
    """One kind of mask: the union of `num_blocks` blocks of one sampled size."""

    num_blocks: int = field(8, help="blocks whose union forms the mask")
    spatial_scale: tuple[float, float] = field((0.15, 0.15), help="fraction of the frame one block covers (range)")
    temporal_scale: tuple[float, float] = field((1.0, 1.0), help="fraction of the clip's time steps a block spans")
    aspect_ratio: tuple[float, float] = field((0.75, 1.5), help="block height / width (range)")
    temporal_anchor: str = field("random", help="where a block shorter than the clip starts: 'random' "
                                                "or 'end' (the last time steps: predict the future)")

    def validate(self) -> list[str]:
        p = []
        if self.num_blocks < 1:
            p.append(f"num_blocks must be >= 1, got {self.num_blocks}")
        for name in ("spatial_scale", "temporal_scale", "aspect_ratio"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                p.append(f"{name} must be a range 0 < lo <= hi, got {(lo, hi)}")
        for name in ("spatial_scale", "temporal_scale"):
            if getattr(self, name)[1] > 1:
                p.append(f"{name} must be at most 1, got {getattr(self, name)}")
        if self.temporal_anchor not in TEMPORAL_ANCHORS:
            p.append(f"temporal_anchor must be one of {', '.join(TEMPORAL_ANCHORS)}, got {self.temporal_anchor!r}")
        return p


@dataclass
class RunConfig:
    """The fields of every pretraining run, whatever its objective: the code store it reads, the run
    directory, how the data is loaded, where and how it runs, and when it writes. Fields marked
    hashed=False may change when a run is resumed. The objectives' configs (`PretrainConfig`,
    `TDVConfig`) extend it; `validate` checks these fields, theirs the rest."""

    codes: str = field("", help="code store from `vidcache extract codes`", hashed=False)
    out: str = field("", help="run directory (checkpoints, metrics, config)", hashed=False)
    split: str | None = field("train", help="store split to train on (None = every done video)")
    loader: str = field("codes", help="codes (decode codes on the device) or mp4 (decode the videos)")
    dtype: str = field("auto", help="autocast: auto (bf16 on GPU, fp32 on CPU), fp32 or bf16", hashed=False)
    device: str = field("auto", help="auto, cpu, cuda or cuda:N", hashed=False)
    workers: int = field(2, help="DataLoader worker processes per rank", hashed=False)
    checkpoint_every: int = field(500, help="steps between checkpoints", hashed=False)
    log_every: int = field(10, help="steps between metrics records", hashed=False)
    stop_at: int | None = field(None, help="end this call at this step (a checkpoint is written); rerun to resume",
                                hashed=False)
    resume: bool = field(True, help="continue from the latest checkpoint in `out`", hashed=False)

    def validate(self) -> list[str]:
        p = []
        if not self.codes:
            p.append("codes is required (a code store from `vidcache extract codes`)")
        if not self.out:
            p.append("out is required (the run directory)")
        for name in ("checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                p.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.loader not in LOADERS:
            p.append(f"loader must be one of {', '.join(LOADERS)}, got {self.loader!r}")
        if self.dtype not in DTYPES:
            p.append(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.workers < 0:
            p.append(f"workers must be >= 0, got {self.workers}")
        if self.stop_at is not None and self.stop_at < 1:
            p.append(f"stop_at must be >= 1 (or unset), got {self.stop_at}")
        return p


@dataclass
class PretrainConfig(RunConfig):
    """A V-JEPA pretraining run (the run fields are `RunConfig`'s). Fields marked hashed=False may
    change when a run is resumed."""

    model: str = field("vit_small", help=f"encoder size: {', '.join(VIT_SIZE_NAMES)}")
    num_frames: int = field(16, help="frames per clip")
    frame_stride: int = field(4, help="stride between the clip's frames (in code frames)")
    patch_size: int = field(16, help="ViT patch side in pixels")
    tubelet_size: int = field(2, help="frames per ViT tubelet")
    crop_size: int | None = field(None, help="clip side in pixels (a multiple of the code patch; default: the store's)")
    crop_scale: tuple[float, float] = field((0.3, 1.0), help="random crop area as a fraction of the frame")
    crop_aspect: tuple[float, float] = field((0.75, 1.35), help="random crop aspect ratio range")
    flip: bool = field(True, help="random horizontal flips")
    pred_depth: int = field(12, help="predictor blocks")
    pred_dim: int = field(384, help="predictor width")
    mask_blocks: tuple[int, ...] = field((8, 2), help="blocks per mask, one entry per mask kind")
    mask_scales: tuple[float, ...] = field((0.15, 0.7), help="spatial scale of one block, per mask kind")
    mask_aspect: tuple[float, float] = field((0.75, 1.5), help="block aspect-ratio range")
    mask_time: float = field(1.0, help="fraction of the clip's time steps a block spans (1 = all, as "
                                       "in V-JEPA; less also asks the predictor to fill in time)")
    mask_time_anchor: str = field("random", help="where shorter blocks sit in time: random, or end "
                                                 "(the predictor forecasts the clip's last steps)")
    mask_adapt: bool = field(True, help="adapt the block scales to the token grid so each mask hides the "
                                        "fraction it hides on the paper's 14x14 grid (see pretrain/masks.py)")
    uniform_power: bool = field(True, help="sin-cos positions split evenly over t, h, w (jepa's pretraining "
                                           "configs); false gives time half the channels")
    steps: int = field(1000, help="total optimiser steps", hashed=False)
    batch_size: int = field(32, help="global batch (split evenly over the ranks)")
    lr: float = field(6.25e-4, help="peak learning rate")
    start_lr: float = field(2e-4, help="learning rate at step 0 (linear warm-up to lr)")
    final_lr: float = field(1e-6, help="learning rate at the end of the cosine")
    warmup: float = field(0.15, help="warm-up length as a fraction of the steps")
    weight_decay: float = field(0.04, help="weight decay at step 0")
    final_weight_decay: float = field(0.4, help="weight decay at the end (cosine)")
    ema: tuple[float, float] = field((0.998, 1.0), help="EMA momentum at the start and the end (linear)")
    schedule_scale: float = field(1.25, help="schedules run as if training were this much longer "
                                             "(V-JEPA truncates the last 20%)")
    betas: tuple[float, float] = field((0.9, 0.999), help="AdamW betas")
    clip_grad: float | None = field(10.0, help="gradient-norm clip (None = off)")
    seed: int = field(0, help="seed of the initialisation, data order, augmentations and masks")

    def validate(self) -> list[str]:
        p = super().validate()
        if self.model not in VIT_SIZE_NAMES:
            p.append(f"model must be one of {', '.join(VIT_SIZE_NAMES)}, got {self.model!r}")
        for name in ("num_frames", "frame_stride", "patch_size", "tubelet_size", "pred_depth", "pred_dim", "steps",
                     "batch_size"):
            if getattr(self, name) < 1:
                p.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.tubelet_size >= 1 and self.num_frames % self.tubelet_size:
            p.append(f"num_frames {self.num_frames} is not a multiple of tubelet_size {self.tubelet_size}")
        if self.num_frames < 2:
            p.append("num_frames must be >= 2 (a video encoder)")
        if self.crop_size is not None and self.crop_size < 1:
            p.append(f"crop_size must be >= 1, got {self.crop_size}")
        for name in ("crop_scale", "crop_aspect", "mask_aspect", "ema", "betas"):
            v = getattr(self, name)
            if len(v) != 2 or not 0 <= v[0] <= v[1]:
                p.append(f"{name} must be a range (lo, hi) with 0 <= lo <= hi, got {v}")
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            p.append(f"crop_scale must lie in (0, 1], got {self.crop_scale}")
        if self.ema[1] > 1:
            p.append(f"ema momentum must be at most 1, got {self.ema}")
        if len(self.mask_blocks) != len(self.mask_scales) or not self.mask_blocks:
            p.append(f"mask_blocks {self.mask_blocks} and mask_scales {self.mask_scales} need one entry per mask kind")
        if any(b < 1 for b in self.mask_blocks) or any(not 0 < s <= 1 for s in self.mask_scales):
            p.append("mask_blocks must be >= 1 and mask_scales in (0, 1]")
        if not 0 < self.mask_time <= 1:
            p.append(f"mask_time must be a fraction in (0, 1], got {self.mask_time}")
        if self.mask_time_anchor not in TEMPORAL_ANCHORS:
            p.append(f"mask_time_anchor must be one of {', '.join(TEMPORAL_ANCHORS)}, got {self.mask_time_anchor!r}")
        if self.pred_dim % 2 or (self.pred_dim // 2) % 2:
            p.append(f"pred_dim must be a multiple of 4 (sin-cos positions), got {self.pred_dim}")
        for name in ("lr", "start_lr", "final_lr", "weight_decay", "final_weight_decay"):
            if getattr(self, name) < 0:
                p.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.warmup < 1:
            p.append(f"warmup must be a fraction in [0, 1), got {self.warmup}")
        if self.schedule_scale < 1:
            p.append(f"schedule_scale must be >= 1, got {self.schedule_scale}")
        if self.clip_grad is not None and self.clip_grad <= 0:
            p.append(f"clip_grad must be > 0 or None, got {self.clip_grad}")
        return p

    def mask_specs(self) -> list[MaskSpec]:
        return [MaskSpec(int(b), (float(s), float(s)), (float(self.mask_time), float(self.mask_time)),
                         tuple(self.mask_aspect), self.mask_time_anchor)
                for b, s in zip(self.mask_blocks, self.mask_scales)]
