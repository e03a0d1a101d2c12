"""MLP probe: the nonlinear baseline of SCALE's tables, on the same grid / selection machinery."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vidcache.config import field
from vidcache.probe.base import GridProbe
from vidcache.probe.data import ProbeData
from vidcache.probe.train import TrainConfig


@dataclass
class MLPConfig(TrainConfig):
    """MLP probe: `depth` hidden layers of width `hidden` (GELU), then a linear classifier."""

    hidden: int = field(1024, help="width of the hidden layers")
    depth: int = field(2, help="number of hidden layers (>= 1)")
    pool: str = field("none", help="none: per-clip training, softmax averaged over clips; mean: per-video mean")
    lrs: list = field(default_factory=lambda: [1e-4, 3e-4, 1e-3, 3e-3], help="learning rates of the grid")
    wds: list = field(default_factory=lambda: [1e-4, 1e-2, 1e-1], help="weight decays of the grid")

    def validate(self) -> list[str]:
        p = super().validate()
        if self.hidden < 1:
            p.append(f"hidden must be >= 1, got {self.hidden}")
        if self.depth < 1:
            p.append(f"depth must be >= 1, got {self.depth}")
        if self.pool not in ("none", "mean"):
            p.append(f"pool must be none or mean, got {self.pool!r}")
        if self.sample != "clip":
            p.append("the MLP probe trains on single views: sample must be clip (use pool=mean for videos)")
        return p


class MLPHead(nn.Module):
    """[Linear -> GELU] x depth -> Linear."""

    def __init__(self, dim: int, num_classes: int, hidden: int = 1024, depth: int = 2):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(dim if i == 0 else hidden, hidden), nn.GELU()]
        layers.append(nn.Linear(hidden, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.layers(batch["x"])


class MLPProbe(GridProbe):
    name = "mlp"
    Config = MLPConfig
    arrays = ("emb",)

    def prepare(self, data: ProbeData) -> ProbeData:
        return data.pooled() if self.cfg.pool == "mean" else data

    def make_head(self, dim: int, num_classes: int) -> nn.Module:
        return MLPHead(dim, num_classes, self.cfg.hidden, self.cfg.depth)
