"""Linear probe: a bank of linear heads over lr x wd, trained in one pass, selected on val.

Inputs are clip embeddings [n, C, D]. By default every clip is a training sample and a video's
prediction is the mean of its clips' softmax (the multi-view protocol); `pool="mean"` trains and
predicts on the mean of each video's clip embeddings instead.
"""

from __future__ import annotations

import torch
from torch import nn

from vidcache.probe.base import GridProbe
from vidcache.probe.config import LinearConfig
from vidcache.probe.data import ProbeData


class LinearHead(nn.Module):
    """logits = x W^T + b, initialised like DINOv2's linear heads (N(0, 0.01), zero bias)."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(dim, num_classes)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.fc(batch["x"])

    @staticmethod
    def grid_forward(params: dict, batch: dict) -> torch.Tensor:
        """All G heads as one [B, D] x [D, G*K] GEMM: one wide product beats G narrow ones."""
        w, b = params["fc.weight"], params["fc.bias"]  # [G, K, D], [G, K]
        g, k, d = w.shape
        x = batch["x"]
        logits = (x @ w.reshape(g * k, d).t()).view(len(x), g, k).transpose(0, 1)
        return logits + b[:, None, :]


class LinearProbe(GridProbe):
    name = "linear"
    Config = LinearConfig
    arrays = ("emb",)

    def prepare(self, data: ProbeData) -> ProbeData:
        return data.pooled() if self.cfg.pool == "mean" else data

    def make_head(self, dim: int, num_classes: int) -> nn.Module:
        return LinearHead(dim, num_classes)
