"""Codes -> pixels: one gather from the codebook and a reshape, in torch (on device) and numpy.

The pretraining loader keeps codes (2 bytes per 10x10 patch) in memory and decodes batches on the
GPU: `CodeDecoder` holds the codebook as a buffer already scaled to the output space (0..255 or
normalised with mean/std), so decoding is a single gather with no Python loop over patches.

The gather writes the output in its final layout: the codebook is also kept as rows of p pixels
(one channel of one row of one tile), and each output row segment of p pixels is fetched by its
own index. Gathering whole tiles and permuting them into frames afterwards moved every pixel twice,
and the permute (inner runs of 3 floats) was the slower half: on one CPU core, decoding 128 frames
of 64 x 64 px took 4.8 ms that way and 1.7 ms this way.
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
        # Derived from `codebook`, so not saved; rebuilt when a state dict replaces the codebook.
        self.register_buffer("rows", self._row_table(c), persistent=False)
        offsets = torch.arange(3).view(3, 1) * patch + torch.arange(patch).view(1, patch)
        self.register_buffer("row_offsets", offsets.view(1, 3, 1, 1, patch, 1), persistent=False)
        self.register_load_state_dict_post_hook(_refresh_rows)

    def _row_table(self, codebook: Tensor) -> Tensor:
        """[K, p*p*3] -> [K * 3 * p, p]: row (k * 3 + channel) * p + y is tile k's row y of that channel."""
        p = self.patch
        return codebook.view(-1, p, p, 3).permute(0, 3, 1, 2).reshape(-1, p).contiguous()

    @property
    def k(self) -> int:
        return self.codebook.shape[0]

    def forward(self, codes: Tensor, out: Tensor | None = None) -> Tensor:
        """Decode; `out`, when given, is a contiguous float32 [B, 3, T, h*p, w*p] tensor on the
        codebook's device that receives the pixels (and is returned) instead of a new tensor."""
        if codes.ndim != 4:
            raise ValueError(f"codes must be [B, T, h, w], got shape {tuple(codes.shape)}")
        b, t, h, w = codes.shape
        p = self.patch
        shape = (b, 3, t, h * p, w * p)
        if out is not None and (tuple(out.shape) != shape or out.dtype != self.rows.dtype
                                or out.device != self.rows.device or not out.is_contiguous()):
            raise ValueError(f"out must be a contiguous {self.rows.dtype} tensor of shape {shape} on "
                             f"{self.rows.device}, got {out.dtype} {tuple(out.shape)} on {out.device}")
        # torch's uint16 supports few ops; index_select wants int64 (int32 measured slower on CPU).
        idx = codes.to(device=self.rows.device, dtype=torch.int64).contiguous()
        # Output [B, 3, T, h*p, w*p] seen as [B, 3, T, h, p, w, p]: the last axis is one row of p
        # pixels, and the row index of everything before it is code * 3p + channel * p + y.
        rows = (idx * (3 * p)).view(b, 1, t, h, 1, w) + self.row_offsets
        if out is None:
            return self.rows.index_select(0, rows.view(-1)).view(shape)  # the one gather
        torch.index_select(self.rows, 0, rows.view(-1), out=out.view(-1, p))
        return out

    def extra_repr(self) -> str:
        return f"k={self.k}, patch={self.patch}, normalised={self.normalised}"


def _refresh_rows(module: CodeDecoder, incompatible_keys) -> None:
    """load_state_dict post-hook: the row table follows a loaded codebook."""
    module.rows = module._row_table(module.codebook)
