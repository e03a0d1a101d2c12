"""MLP probe: the nonlinear baseline of SCALE's tables, on the same grid / selection machinery."""

from __future__ import annotations

import torch
from torch import nn

from vidcache.probe.base import GridProbe
from vidcache.probe.config import MLPConfig
from vidcache.probe.data import ProbeData


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
