"""`TDVConfig`: the options of `vidcache pretrain tdv` (torch-free, so the CLI can build its options).

Defaults are sized for a 2-core CPU; `TDVConfig.recipe()` gives the values of the public recipe
(ninaddaithankar/tdv `job_scripts/pretrain_tdv.slurm`, `hparams/args.py`); docs/pretrain.md has the
table of both and why they differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from vidcache.config import field
from vidcache.pretrain.config import VIT_SIZE_NAMES, RunConfig


@dataclass
class TDVConfig(RunConfig):
    """A TDV pretraining run (the run fields are `RunConfig`'s; checkpoints every 100 steps). Fields
    marked hashed=False may change when a run is resumed."""

    objective: ClassVar[str] = "tdv"

    checkpoint_every: int = field(100, help="steps between checkpoints", hashed=False)
    model: str = field("vit_micro", help=f"frame encoder size: {', '.join(VIT_SIZE_NAMES)} (recipe: vit_base)")
    patch_size: int = field(16, help="ViT patch side in pixels (recipe: 14); must divide the frame side")
    motion_model: str | None = field(None, help="motion encoder size (default: the frame encoder's)")
    motion_depth: int | None = field(None, help="motion encoder blocks (default: the size's depth; recipe: 12)")
    motion_lr_scale: float = field(3e-2, help="motion encoder lr multiplier (--difference_encoder_lr_multiplier)")
    num_frames: int = field(4, help="context length in frames (recipe: 16)")
    frame_spacing: float = field(0.25, help="seconds between the context's frames, with the store's fps")
    frame_stride: int | None = field(None, help="stride in code frames (overrides frame_spacing)")
    crop_size: int | None = field(None, help="frame side in pixels (a multiple of the code patch; default: the store's)")
    prototypes: int = field(256, help="prototypes of the DINO/iBOT head (recipe: 32768)")
    head_hidden: int = field(256, help="hidden width of the head's MLP (recipe: 2048)")
    head_bottleneck: int = field(64, help="bottleneck width of the head (recipe: 256)")
    head_layers: int = field(3, help="linear layers of the head's MLP")
    recon_weight: float = field(1.5, help="weight of the latent prediction MSE")
    dino_weight: float = field(0.75, help="weight of the DINO loss on CLS prototypes")
    ibot_weight: float = field(0.75, help="weight of the iBOT loss on patch prototypes")
    student_temp: float = field(0.1, help="student temperature of the DINO/iBOT losses")
    teacher_temp: float = field(0.1, help="teacher temperature of the DINO/iBOT losses")
    center_momentum: float = field(0.9, help="momentum of the teacher-logit centre")
    recon_centering: bool = field(False, help="centre and sharpen the MSE targets (off in the recipe)")
    recon_temps: tuple[float, float] = field((1.0, 1.0), help="(predicted, target) temperatures of the MSE "
                                                             "when recon_centering")
    static_threshold: float = field(0.0, help="skip sequences whose mean |RGB difference| (normalised pixels) is "
                                              "at most this (0 = keep all, as the recipe)")
    rollout: int = field(1, help="frames ahead the prediction reaches (--rollout_n_frames)")
    ema: float = field(0.990025, help="EMA momentum of the teacher (constant)")
    steps: int = field(300, help="total optimiser steps", hashed=False)
    schedule_steps: int | None = field(None, help="steps the lr schedule spans (default: steps; recipe: 3e6 "
                                                  "for 6e5 steps)")
    batch_size: int = field(8, help="global batch of clips (split evenly over the ranks; recipe: 16)")
    lr: float = field(5e-4, help="peak learning rate (recipe: 1e-4)")
    warmup: float = field(0.1, help="linear warm-up from 0, as a fraction of the steps (recipe: 10k steps)")
    final_lr_scale: float = field(1e-5, help="lr at the end of the cosine, as a fraction of the peak "
                                             "(recipe: 1 / min_lr_scale 100000)")
    weight_decay: float = field(0.01, help="AdamW weight decay (every parameter, as the recipe)")
    betas: tuple[float, float] = field((0.9, 0.999), help="AdamW betas")
    clip_grad: float | None = field(1.0, help="gradient-norm clip (None = off)")
    seed: int = field(0, help="seed of the initialisation and the data order")

    # The loader's augmentations: none in the recipe (frames are only resized; DINO augmentations off).
    crop_scale: ClassVar[tuple[float, float]] = (1.0, 1.0)
    crop_aspect: ClassVar[tuple[float, float]] = (1.0, 1.0)
    flip: ClassVar[bool] = False

    @classmethod
    def recipe(cls, **overrides) -> "TDVConfig":
        """The public recipe's values (job_scripts/pretrain_tdv.slurm) for the fields vidcache sizes down."""
        values = dict(model="vit_base", patch_size=14, motion_depth=12, num_frames=16, prototypes=32768,
                      head_hidden=2048, head_bottleneck=256, batch_size=16, lr=1e-4, steps=600000,
                      warmup=10000 / 600000, schedule_steps=3000000, final_lr_scale=1e-5)
        return cls(**{**values, **overrides})

    def validate(self) -> list[str]:
        p = super().validate()
        for name in ("model", "motion_model"):
            v = getattr(self, name)
            if v is not None and v not in VIT_SIZE_NAMES:
                p.append(f"{name} must be one of {', '.join(VIT_SIZE_NAMES)}, got {v!r}")
        for name in ("patch_size", "steps", "batch_size", "prototypes", "head_hidden", "head_bottleneck",
                     "head_layers", "rollout"):
            if getattr(self, name) < 1:
                p.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("motion_depth", "frame_stride", "schedule_steps", "crop_size"):
            v = getattr(self, name)
            if v is not None and v < 1:
                p.append(f"{name} must be >= 1 (or unset), got {v}")
        if self.num_frames < 2:
            p.append(f"num_frames must be >= 2 (TDV predicts the next frame), got {self.num_frames}")
        elif self.rollout >= self.num_frames:
            p.append(f"rollout {self.rollout} needs num_frames > rollout, got {self.num_frames}")
        if self.frame_spacing <= 0:
            p.append(f"frame_spacing must be > 0 seconds, got {self.frame_spacing}")
        for name in ("motion_lr_scale", "recon_weight", "dino_weight", "ibot_weight", "lr", "weight_decay",
                     "static_threshold"):
            if getattr(self, name) < 0:
                p.append(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("student_temp", "teacher_temp"):
            if getattr(self, name) <= 0:
                p.append(f"{name} must be > 0, got {getattr(self, name)}")
        if len(self.recon_temps) != 2 or min(self.recon_temps) <= 0:
            p.append(f"recon_temps must be two temperatures > 0, got {self.recon_temps}")
        for name in ("center_momentum", "ema"):
            if not 0 <= getattr(self, name) <= 1:
                p.append(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.warmup < 1:
            p.append(f"warmup must be a fraction in [0, 1), got {self.warmup}")
        if not 0 <= self.final_lr_scale <= 1:
            p.append(f"final_lr_scale must lie in [0, 1], got {self.final_lr_scale}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            p.append(f"betas must be two values in [0, 1), got {self.betas}")
        if self.clip_grad is not None and self.clip_grad <= 0:
            p.append(f"clip_grad must be > 0 or None, got {self.clip_grad}")
        return p
