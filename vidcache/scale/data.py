"""Clip sets for SCALE: two disjoint random sets of K clips per video, plus their masks.

The training store holds C clips per video (16 with `random:16:SEED`). Every step draws, for each
video, 2K distinct clips in random order — the first K form set 1, the next K set 2 — and masks a
random subset of each set: each clip with probability `mask_ratio` (the official code's Bernoulli
masking, `Scale.forward` in Separius/SCALE `src/scale.py`) or exactly `num_masked` per set (the
thesis form). All randomness comes from one torch.Generator seeded by (seed, epoch),
so an epoch's batches are the same whether a run is fresh or resumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from vidcache.errors import DataError


def check_set_size(num_clips: int, clips_per_set: int) -> None:
    """Refuse a set size the store's clips cannot fill (2K distinct clips per video)."""
    if 2 * clips_per_set > num_clips:
        raise DataError(f"SCALE needs 2K = {2 * clips_per_set} distinct clips per video but the store has "
                        f"{num_clips}; extract the training store with --protocol random:{2 * clips_per_set}:SEED "
                        f"or lower clips_per_set")


def sample_sets(batch: int, num_clips: int, clips_per_set: int, num_masked: int,
                generator: torch.Generator, mask_ratio: float | None = None) -> tuple[Tensor, Tensor]:
    """Clip indices [batch, 2, K] (2K distinct per video) and masks [batch, 2, K] bool.

    With `mask_ratio`, every clip is masked independently with that probability. Otherwise each set
    gets exactly `num_masked` masked clips, chosen uniformly; 1 <= num_masked < K so a set is never
    fully masked and never unmasked.
    """
    K = clips_per_set
    check_set_size(num_clips, K)
    if mask_ratio is None and not 1 <= num_masked < K:
        raise DataError(f"num_masked must be in [1, {K - 1}] for sets of {K} clips (got {num_masked})")
    order = torch.rand(batch, num_clips, generator=generator).argsort(dim=1)
    clip_idx = order[:, : 2 * K].reshape(batch, 2, K)
    if mask_ratio is not None:
        return clip_idx, torch.rand(batch, 2, K, generator=generator) < mask_ratio
    chosen = torch.rand(batch, 2, K, generator=generator).argsort(dim=-1)[..., :num_masked]
    mask = torch.zeros(batch, 2, K, dtype=torch.bool).scatter_(-1, chosen, True)
    return clip_idx, mask


def embedding_stats(emb: np.ndarray, chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """Per-dimension mean and std over every clip of [V, C, D] embeddings, in float64 by chunks."""
    flat = emb.reshape(-1, emb.shape[-1])
    s = np.zeros(flat.shape[1]); s2 = np.zeros(flat.shape[1])
    for i in range(0, len(flat), chunk):
        x = flat[i:i + chunk].astype(np.float64)
        s += x.sum(0); s2 += (x * x).sum(0)
    n = max(len(flat), 1)
    mean = s / n
    std = np.sqrt(np.maximum(s2 / n - mean ** 2, 0.0))
    return torch.from_numpy(mean).float(), torch.from_numpy(std).float()


def check_finite(name: str, arr: np.ndarray, chunk: int = 4096) -> None:
    """Refuse features with NaN/inf (a broken extraction), naming the first bad video row."""
    for i in range(0, len(arr), chunk):
        bad = ~np.isfinite(arr[i:i + chunk].astype(np.float32)).reshape(len(arr[i:i + chunk]), -1).all(1)
        if bad.any():
            raise DataError(f"{name} holds NaN or inf values (first at row {i + int(bad.argmax())}); "
                            "re-extract the store or drop those videos")


@dataclass
class ClipSets:
    """Cached embeddings [V, C, D] and boxes [V, C, 6] of the training videos, on one device."""

    emb: Tensor
    box: Tensor

    @classmethod
    def from_arrays(cls, emb: np.ndarray, box: np.ndarray, device: str | torch.device = "cpu") -> "ClipSets":
        if emb.ndim != 3 or box.shape != emb.shape[:2] + (6,):
            raise DataError(f"expected emb [V, C, D] and box [V, C, 6], got {emb.shape} and {box.shape}")
        if len(emb) == 0:
            raise DataError("no done videos to train on; run the extraction first or pick another split")
        check_finite("clips/emb", emb)
        check_finite("clips/box", box)
        # float16 stays float16 on the device (half the memory); the predictor casts per batch.
        return cls(torch.from_numpy(np.ascontiguousarray(emb)).to(device),
                   torch.from_numpy(np.ascontiguousarray(box, dtype=np.float32)).to(device))

    @property
    def num_videos(self) -> int:
        return self.emb.shape[0]

    @property
    def num_clips(self) -> int:
        return self.emb.shape[1]

    @property
    def dim(self) -> int:
        return self.emb.shape[2]

    def steps_per_epoch(self, batch_size: int) -> int:
        return -(-self.num_videos // batch_size)

    def epoch(self, epoch: int, batch_size: int, clips_per_set: int, num_masked: int,
              seed: int, mask_ratio: float | None = None) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """Batches (emb [B, 2, K, D], box [B, 2, K, 6], mask [B, 2, K]) over shuffled videos."""
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(self.num_videos, generator=g)
        dev = self.emb.device
        for start in range(0, self.num_videos, batch_size):
            vids = order[start:start + batch_size]
            clip_idx, mask = sample_sets(len(vids), self.num_clips, clips_per_set, num_masked, g, mask_ratio)
            vids, clip_idx = vids.to(dev), clip_idx.to(dev)
            rows = vids[:, None, None]
            yield self.emb[rows, clip_idx], self.box[rows, clip_idx], mask.to(dev)
