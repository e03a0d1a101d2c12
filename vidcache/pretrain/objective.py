"""What an objective plugs into the pretraining trainer (`vidcache.pretrain.train.Trainer`).

The trainer owns everything objectives share: the code-store loader and the device decoder, DDP,
AdamW with per-group lr scales and weight decay, autocast, gradient clipping, atomic checkpoints
with exact resume, metrics.jsonl and the loss plot. An objective owns its model and says:

- `build(...)`: the model (an nn.Module whose forward returns the loss, or (loss, metrics));
- `param_groups()`: parameter groups, each with an `lr_scale` and `apply_wd`;
- `schedules(step)`: lr, weight decay and EMA momentum of a step (functions of the step alone);
- `inputs(step)`: extra keyword arguments of the model's forward for a step (V-JEPA's masks);
- `after_step(momentum)`: the EMA update once the optimiser has stepped;
- `checkpoint()` / `load(ckpt)`: the model's part of a checkpoint, a `vidcache:` backbone;
- `step_flops(count, video, inputs)` (optional): the training FLOPs of a step on this rank, for
  objectives whose input shapes change every step (else the trainer counts one step of each shape).

`frame_stride(cfg, source)` and `check_source(cfg, source, stride)` run before any model exists, so
a store that cannot feed the objective is refused with one line.
"""

from __future__ import annotations

import abc
from typing import Any, Callable

import torch
from torch import nn


class Objective(abc.ABC):
    name: str = ""
    loss_label: str = "loss"

    def __init__(self, cfg: Any, *, image_size: int, device: torch.device, rank: int = 0, world: int = 1):
        self.cfg, self.image_size, self.device, self.rank, self.world = cfg, image_size, device, rank, world
        self.model: nn.Module = self.build().to(device)

    @staticmethod
    def frame_stride(cfg: Any, source: Any) -> int:
        return int(cfg.frame_stride)

    @staticmethod
    def check_source(cfg: Any, source: Any, stride: int) -> list[str]:
        return []

    @abc.abstractmethod
    def build(self) -> nn.Module:
        """The model, identical in every process for a seed."""

    @abc.abstractmethod
    def param_groups(self) -> list[dict]:
        """Optimiser groups; each dict has `params`, `lr_scale` and `apply_wd`."""

    @abc.abstractmethod
    def schedules(self, step: int) -> dict[str, float]:
        """{"lr", "wd", "momentum"} for a step."""

    def inputs(self, step: int) -> dict[str, Any]:
        return {}

    @abc.abstractmethod
    def after_step(self, momentum: float) -> None:
        """Update EMA targets after an optimiser step."""

    @abc.abstractmethod
    def checkpoint(self) -> dict[str, Any]:
        """{"model_config", "target_encoder", "encoder", ...}: the model's entries of a checkpoint."""

    def step_flops(self, count: Callable[[Callable[[], Any]], int], video: torch.Tensor,
                   inputs: dict[str, Any]) -> int | None:
        """The FLOPs of one training step (forward and backward) on `video` with `inputs`, or None to
        let the trainer run the first step of each input shape under the counter. `count(fn)` gives
        the FLOPs of `fn()` with the counter and autocast of the step."""
        return None

    @abc.abstractmethod
    def load(self, ckpt: dict) -> None:
        """Restore the model from a checkpoint written by `checkpoint`."""
