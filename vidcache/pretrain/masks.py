"""V-JEPA 3D multi-block masks: unions of spatial blocks repeated over time.

A mask spec (short-range: 8 blocks of spatial scale 0.15; long-range: 2 blocks of scale 0.7; aspect
ratio 0.75-1.5; every block spans all frames) is turned into, per clip, the indices of the tokens
the context encoder sees (`enc`) and the indices the predictor must predict (`pred`), in the
VisionTransformer's (t, h, w) token order.

As in facebookresearch/jepa (`src/masks/multiblock3d.py`; vjepa2's `src/masks/multiseq_multiblock3d.py`
is the same), the block *size* is drawn once per batch and the block *positions* once per clip; the
block area is floored to whole cells (`int(H * W * scale)`) before the height and width are rounded
from it; a draw that hides every token is redrawn. Index lists are then cut to the shortest one of
the batch, so they stack into `[B, K]` tensors. One difference: a block is at least one cell on each
side (the reference's floor can give a zero-area block on a tiny grid, and then nothing to predict).

Small grids. The paper's scales were set for a 14 x 14 token grid (224 px, 16 px patches). On a
coarse grid whole cells cannot make the same fraction: 8 blocks of 0.15 on a 4 x 4 grid floor to
2-cell blocks, which leave 44 % of the tokens visible on average against 37 % on 14 x 14. With
`adapt=True` (`adapt_spec`) each spec's scale range is replaced by the one whose expected visible
fraction on the actual grid equals the fraction the spec gives on the 14 x 14 grid; where no single
cell count matches, the range straddles two, and the per-batch draw mixes them in the right
proportion. The expectation is exact (a block's position is uniform, so a token stays visible with
probability prod over axes of (1 - p_axis)^num_blocks), averaged over the scale and aspect ranges.

Randomness comes only from the generator the caller passes: the trainer seeds one per step, so a
resumed run and any number of ranks draw the same masks for the same step.
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from vidcache.pretrain.config import TEMPORAL_ANCHORS, MaskSpec  # noqa: F401  (re-exported)

# Redraws of the block positions before a clip's context is forced to keep one token: on tiny grids
# two long-range blocks can cover everything, and a context of zero tokens has nothing to encode.
MAX_REDRAWS = 20
# The token grid the paper's mask scales were chosen for: 224 px crops of 16 px patches.
REFERENCE_GRID = 14
# Adapted scale ranges are searched on this step, and kept when within this of the intended fraction.
SCALE_STEP = 0.0025
FRACTION_TOLERANCE = 0.004
# An area is not used by an adapted range when its blocks hide the whole clip in more draws than this.
MAX_REDRAW_RATE = 0.5
# Points over a scale / aspect range at which the expected visible fraction is averaged.
RANGE_POINTS = 64


def vjepa_mask_specs() -> list[MaskSpec]:
    """The paper's two masks: short-range (8 x 0.15) and long-range (2 x 0.7)."""
    return [MaskSpec(8, (0.15, 0.15)), MaskSpec(2, (0.7, 0.7))]


def _uniform(lo: float, hi: float, generator: torch.Generator) -> float:
    return lo + torch.rand(1, generator=generator).item() * (hi - lo)


def block_hw(height: int, width: int, scale: float, ratio: float) -> tuple[int, int]:
    """A block's (h, w) in cells: the area floored to whole cells first, as jepa does, then
    h = round(sqrt(area * ratio)), w = round(sqrt(area / ratio)), each within [1, side]."""
    area = int(height * width * scale)
    h = min(height, max(1, int(round(math.sqrt(area * ratio)))))
    w = min(width, max(1, int(round(math.sqrt(area / ratio)))))
    return h, w


def _cover(n: int, size: int) -> np.ndarray:
    """P(position i of an axis of length n lies in a block of `size` placed uniformly), per i."""
    i = np.arange(n)
    first = np.maximum(0, i - size + 1)
    last = np.minimum(i, n - size)
    return (last - first + 1) / (n - size + 1)


@lru_cache(maxsize=4096)
def _visible_given_size(depth: int, height: int, width: int, t: int, h: int, w: int, num_blocks: int,
                        anchor: str) -> tuple[float, float]:
    """(expected visible fraction, P0) of the sampler's clip under `num_blocks` blocks of one size.

    A token stays visible with probability (1 - p)^num_blocks, p the chance one uniformly placed block
    covers it. The sampler redraws a clip that hides everything (up to MAX_REDRAWS times, then keeps one
    token), so the expectation is conditioned on that: with P0 the chance of an all-hidden draw,
    (1 - P0^R) E[V] / (1 - P0) + P0^R / N. P0 is 0 when the blocks cannot cover the grid, else it is
    counted on a fixed-seed sample of draws."""
    pt = _cover(depth, t) if anchor == "random" else (np.arange(depth) >= depth - t).astype(float)
    p = pt[:, None, None] * _cover(height, h)[None, :, None] * _cover(width, w)[None, None, :]
    mean = float(((1.0 - p) ** num_blocks).mean())
    n = depth * height * width
    # Covering needs a block per lattice point (multiples of the block's sides): fewer blocks never do.
    if math.ceil(depth / t) * math.ceil(height / h) * math.ceil(width / w) > num_blocks:
        return mean, 0.0
    p0 = _all_hidden_rate(depth, height, width, t, h, w, num_blocks, anchor)
    if p0 >= 1.0:
        return 1.0 / n, p0
    return (1.0 - p0 ** MAX_REDRAWS) * mean / (1.0 - p0) + p0 ** MAX_REDRAWS / n, p0


def _all_hidden_rate(depth: int, height: int, width: int, t: int, h: int, w: int, num_blocks: int,
                     anchor: str, draws: int = 2000, chunk: int = 500) -> float:
    """Fraction of `draws` random placements of the blocks that cover every token (fixed seed)."""
    rng = np.random.default_rng(0)
    hidden = 0
    for _ in range(draws // chunk):
        covered = np.zeros((chunk, depth, height, width), dtype=bool)
        for _ in range(num_blocks):
            top = rng.integers(0, height - h + 1, chunk)[:, None]
            left = rng.integers(0, width - w + 1, chunk)[:, None]
            start = (np.full(chunk, depth - t) if anchor == "end" else rng.integers(0, depth - t + 1, chunk))[:, None]
            in_t = (np.arange(depth) >= start) & (np.arange(depth) < start + t)
            in_h = (np.arange(height) >= top) & (np.arange(height) < top + h)
            in_w = (np.arange(width) >= left) & (np.arange(width) < left + w)
            covered |= in_t[:, :, None, None] & in_h[:, None, :, None] & in_w[:, None, None, :]
        hidden += int(covered.reshape(chunk, -1).all(1).sum())
    return hidden / draws


def _points(lo: float, hi: float) -> np.ndarray:
    """Midpoints of RANGE_POINTS equal parts of [lo, hi] (one point when lo == hi)."""
    if hi <= lo:
        return np.array([lo])
    return lo + (np.arange(RANGE_POINTS) + 0.5) / RANGE_POINTS * (hi - lo)


def _visible_by_area(spec: MaskSpec, depth: int, height: int, width: int,
                     areas: range | None = None) -> np.ndarray:
    """Expected visible fraction for each floored block area 0..H*W (cells), averaged over the
    temporal and aspect ranges (NaN outside `areas`, when given). The spatial scale acts only
    through the area, int(H * W * scale)."""
    out = np.full(height * width + 1, np.nan)
    for area in areas if areas is not None else range(height * width + 1):
        out[area] = _visible_at_area(depth, height, width, area, spec.num_blocks, tuple(spec.temporal_scale),
                                     tuple(spec.aspect_ratio), spec.temporal_anchor)
    return out


@lru_cache(maxsize=65536)
def _visible_at_area(depth: int, height: int, width: int, area: int, num_blocks: int,
                     temporal_scale: tuple[float, float], aspect_ratio: tuple[float, float], anchor: str) -> float:
    scale = (area + 0.5) / (height * width)
    sizes = [(max(1, int(depth * ts)),) + block_hw(height, width, scale, float(r))
             for ts in _points(*temporal_scale) for r in _points(*aspect_ratio)]
    return float(np.mean([_visible_given_size(depth, height, width, *size, num_blocks, anchor)[0] for size in sizes]))


@lru_cache(maxsize=65536)
def _redraw_rate_at_area(depth: int, height: int, width: int, area: int, num_blocks: int,
                         temporal_scale: tuple[float, float], aspect_ratio: tuple[float, float], anchor: str) -> float:
    """The highest all-hidden rate P0 among the block sizes an area gives."""
    scale = (area + 0.5) / (height * width)
    sizes = {(max(1, int(depth * ts)),) + block_hw(height, width, scale, float(r))
             for ts in _points(*temporal_scale) for r in _points(*aspect_ratio)}
    return max(_visible_given_size(depth, height, width, *size, num_blocks, anchor)[1] for size in sizes)


def _mean_over_scales(by_area: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Exact mean of the visible fraction for a scale drawn uniformly in [lo, hi] (arrays of ranges):
    a step function of the scale with steps at k / (H * W), integrated piece by piece."""
    cells = len(by_area) - 1
    by_area = np.nan_to_num(by_area)  # areas outside the asked ranges were not computed; they cancel

    def integral(x: np.ndarray) -> np.ndarray:  # \int_0^x visible(s) ds
        k = np.minimum(np.floor(x * cells).astype(int), cells)
        whole = np.concatenate([[0.0], np.cumsum(by_area)]) / cells
        return whole[k] + (x - k / cells) * by_area[k]

    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    point = by_area[np.minimum(np.floor(lo * cells).astype(int), cells)]
    width = np.where(hi > lo, hi - lo, 1.0)
    return np.where(hi > lo, (integral(hi) - integral(lo)) / width, point)


def expected_visible(spec: MaskSpec, depth: int, height: int, width: int) -> float:
    """Expected fraction of a clip's tokens a spec leaves visible (before the batch's cut to the shortest)."""
    lo, hi = spec.spatial_scale
    cells = height * width
    by_area = _visible_by_area(spec, depth, height, width, range(int(cells * lo), int(cells * hi) + 1))
    return float(_mean_over_scales(by_area, np.array([lo]), np.array([hi]))[0])


def adapt_spec(spec: MaskSpec, depth: int, height: int, width: int,
               reference: int = REFERENCE_GRID) -> MaskSpec:
    """The spec with a spatial-scale range whose expected visible fraction on `height x width` equals the
    spec's on the reference grid (`reference x reference`, same depth). Kept as is when it already does."""
    intended = expected_visible(spec, depth, reference, reference)
    if abs(expected_visible(spec, depth, height, width) - intended) <= FRACTION_TOLERANCE:
        return spec
    # Candidate ranges: both ends on a grid of SCALE_STEP (plus the requested ends). Among the ranges
    # within tolerance take the one closest to the requested range (log distance of both ends), else
    # the closest in fraction.
    # Areas whose blocks would hide the whole clip in most draws are left out: the sampler would
    # spend its redraws on them and end on a context of one token.
    lo, hi = spec.spatial_scale
    cells = height * width
    key = (spec.num_blocks, tuple(spec.temporal_scale), tuple(spec.aspect_ratio), spec.temporal_anchor)
    usable = [a for a in range(cells + 1) if _redraw_rate_at_area(depth, height, width, a, *key) <= MAX_REDRAW_RATE]
    top = (usable[-1] + 1) / cells if usable else 1.0 / cells
    ends = np.unique(np.concatenate([np.arange(1, int(round(1.0 / SCALE_STEP)) + 1) * SCALE_STEP, [lo, hi]]))
    ends = ends[ends <= min(1.0, top)]
    i, j = np.triu_indices(len(ends))
    by_area = _visible_by_area(spec, depth, height, width)
    err = np.abs(_mean_over_scales(by_area, ends[i], ends[j]) - intended)
    dist = np.abs(np.log(ends[i] / lo)) + np.abs(np.log(ends[j] / hi))
    ok = err <= FRACTION_TOLERANCE
    k = int(np.argmin(np.where(ok, dist, np.inf))) if ok.any() else int(np.argmin(err))
    return replace(spec, spatial_scale=(round(float(ends[i[k]]), 6), round(float(ends[j[k]]), 6)))


class MultiBlockMasks:
    """Draws context / target token indices for a token grid of `depth x height x width`.

    `masks(batch_size, generator)` returns `(enc, pred)`: lists with one LongTensor `[B, K]` per spec.
    """

    def __init__(self, depth: int, height: int, width: int, specs: Sequence[MaskSpec] | None = None,
                 adapt: bool = False):
        self.depth, self.height, self.width = int(depth), int(height), int(width)
        self.requested_specs = list(specs) if specs is not None else vjepa_mask_specs()
        self.specs = ([adapt_spec(s, self.depth, self.height, self.width) for s in self.requested_specs]
                      if adapt else list(self.requested_specs))
        self.num_tokens = self.depth * self.height * self.width

    def block_size(self, spec: MaskSpec, generator: torch.Generator) -> tuple[int, int, int]:
        """(t, h, w) of one block: time span, then a spatial area and aspect ratio, rounded to cells."""
        t = max(1, int(self.depth * _uniform(*spec.temporal_scale, generator)))
        scale = _uniform(*spec.spatial_scale, generator)
        ratio = _uniform(*spec.aspect_ratio, generator)
        return (t,) + block_hw(self.height, self.width, scale, ratio)

    def _visible(self, size: tuple[int, int, int], num_blocks: int, generator: torch.Generator,
                 anchor: str = "random") -> Tensor:
        """Bool grid [T, H, W], True where no block covers the token."""
        t, h, w = size
        keep = torch.ones(self.depth, self.height, self.width, dtype=torch.bool)
        for _ in range(num_blocks):
            top = int(torch.randint(0, self.height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, self.width - w + 1, (1,), generator=generator))
            start = int(torch.randint(0, self.depth - t + 1, (1,), generator=generator))
            if anchor == "end":  # drawn all the same, so 'random' and 'end' consume the generator alike
                start = self.depth - t
            keep[start:start + t, top:top + h, left:left + w] = False
        return keep

    def sample_one(self, spec: MaskSpec, size: tuple[int, int, int], generator: torch.Generator) -> Tensor:
        """Visible-token grid of one clip; never all hidden, never all visible."""
        for _ in range(MAX_REDRAWS):
            keep = self._visible(size, spec.num_blocks, generator, spec.temporal_anchor)
            if keep.any():
                return keep
        # Every redraw hid the whole clip: reveal one random token so the context is not empty.
        keep = keep.flatten()
        keep[int(torch.randint(0, self.num_tokens, (1,), generator=generator))] = True
        return keep.view(self.depth, self.height, self.width)

    def __call__(self, batch_size: int, generator: torch.Generator) -> tuple[list[Tensor], list[Tensor]]:
        enc_all, pred_all = [], []
        for spec in self.specs:
            size = self.block_size(spec, generator)
            enc, pred = [], []
            for _ in range(batch_size):
                keep = self.sample_one(spec, size, generator).flatten()
                enc.append(torch.nonzero(keep).squeeze(1))
                pred.append(torch.nonzero(~keep).squeeze(1))
            k_enc = min(len(e) for e in enc)
            k_pred = min(len(p) for p in pred)
            enc_all.append(torch.stack([e[:k_enc] for e in enc]))
            pred_all.append(torch.stack([p[:k_pred] for p in pred]))
        return enc_all, pred_all
