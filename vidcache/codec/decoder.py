"""Codes -> pixels: one gather from the codebook and a reshape, in torch (on device) and numpy.

The pretraining loader keeps codes (2 bytes per 10x10 patch) in memory and decodes batches on the
GPU: `CodeDecoder` holds the codebook as a buffer already scaled to the output space (0..255 or
normalised with mean/std), so decoding is a single index into it followed by a permute/reshape that
lays the p x p tiles back into frames, with no Python loop over patches.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from vidcache.errors import ConfigError


def decode_codes_np(codes: np.ndarray, centroids: np.ndarray, patch: int) -> np.ndarray:
    """codes [..., h, w] (any integer dtype) -> float32 frames [..., h*p, w*p, 3].

    `centroids` float32 [K, p*p*3] in the output pixel units (e.g. `Codebook.centroids_255()`).
    """
    codes = np.asarray(codes)
    *lead, h, w = codes.shape
    tiles = np.asarray(centroids, dtype=np.float32)[codes.astype(np.int64)]  # [..., h, w, p*p*3]
    tiles = tiles.reshape(*lead, h, w, patch, patch, 3)
    n = len(lead)
    return tiles.transpose(*range(n), n, n + 2, n + 1, n + 3, n + 4).reshape(*lead, h * patch, w * patch, 3)


class CodeDecoder(nn.Module):
    """codes [B, T, h, w] -> pixels [B, 3, T, h*p, w*p] (the backbones' video layout).

    Args:
        centroids: float32 [K, p*p*3] in 0..255 units (`Codebook.centroids_255()`), or a `Codebook`.
        patch: patch side (taken from the codebook when one is given).
        mean, std: per-channel normalisation in 0..1 units (e.g. ImageNet's); when given the output is
            (x / 255 - mean) / std, else floats in 0..255.
    """

    def __init__(self, centroids, patch: int | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None):
        super().__init__()
        if hasattr(centroids, "centroids_255"):
            patch = patch or centroids.patch
            centroids = centroids.centroids_255()
        if patch is None:
            raise ConfigError(["patch is required when decoding from a bare centroid array"], "CodeDecoder")
        c = torch.as_tensor(np.asarray(centroids), dtype=torch.float32)
        if c.ndim != 2 or c.shape[1] != patch * patch * 3:
            raise ConfigError([f"centroids must be [K, {patch * patch * 3}] for patch {patch}, got {tuple(c.shape)}"],
                              "CodeDecoder")
        if (mean is None) != (std is None):
            raise ConfigError(["give both mean and std, or neither"], "CodeDecoder")
        self.patch = patch
        self.normalised = mean is not None
        if self.normalised:
            m = torch.tensor(mean, dtype=torch.float32)
            s = torch.tensor(std, dtype=torch.float32)
            if m.shape != (3,) or s.shape != (3,) or bool((s <= 0).any()):
                raise ConfigError(["mean and std need 3 values each, std > 0"], "CodeDecoder")
            # The channel is the fastest axis of a patch vector, so tiling mean/std p*p times lines
            # them up with it: normalising the K centroids once replaces normalising every pixel.
            c = (c / 255.0 - m.repeat(patch * patch)) / s.repeat(patch * patch)
        self.register_buffer("codebook", c, persistent=True)

    @property
    def k(self) -> int:
        return self.codebook.shape[0]

    def forward(self, codes: Tensor) -> Tensor:
        if codes.ndim != 4:
            raise ValueError(f"codes must be [B, T, h, w], got shape {tuple(codes.shape)}")
        b, t, h, w = codes.shape
        p = self.patch
        # torch's uint16 supports few ops; int32 indexes fine and halves the copy of int64.
        idx = codes.to(device=self.codebook.device, dtype=torch.int32)
        tiles = self.codebook[idx]  # [B, T, h, w, p*p*3] -- the one gather
        tiles = tiles.view(b, t, h, w, p, p, 3)
        return tiles.permute(0, 6, 1, 2, 4, 3, 5).reshape(b, 3, t, h * p, w * p)

    def extra_repr(self) -> str:
        return f"k={self.k}, patch={self.patch}, normalised={self.normalised}"
