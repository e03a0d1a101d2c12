"""V-JEPA 3D multi-block masks: unions of spatial blocks repeated over time.

A mask spec (short-range: 8 blocks of spatial scale 0.15; long-range: 2 blocks of scale 0.7; aspect
ratio 0.75-1.5; every block spans all frames) is turned into, per clip, the indices of the tokens
the context encoder sees (`enc`) and the indices the predictor must predict (`pred`), in the
VisionTransformer's (t, h, w) token order.

As in facebookresearch/jepa, the block *size* is drawn once per batch and the block *positions*
once per clip; a draw that would hide every token is redrawn. Index lists are then cut to the
shortest one of the batch, so they stack into `[B, K]` tensors.

Randomness comes only from the generator the caller passes: the trainer seeds one per step, so a
resumed run and any number of ranks draw the same masks for the same step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from vidcache.config import field

# Redraws of the block positions before a clip's context is forced to keep one token: on tiny grids
# two long-range blocks can cover everything, and a context of zero tokens has nothing to encode.
MAX_REDRAWS = 20
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


def vjepa_mask_specs() -> list[MaskSpec]:
    """The paper's two masks: short-range (8 x 0.15) and long-range (2 x 0.7)."""
    return [MaskSpec(8, (0.15, 0.15)), MaskSpec(2, (0.7, 0.7))]


def _uniform(lo: float, hi: float, generator: torch.Generator) -> float:
    return lo + torch.rand(1, generator=generator).item() * (hi - lo)


class MultiBlockMasks:
    """Draws context / target token indices for a token grid of `depth x height x width`.

    `masks(batch_size, generator)` returns `(enc, pred)`: lists with one LongTensor `[B, K]` per spec.
    """

    def __init__(self, depth: int, height: int, width: int, specs: Sequence[MaskSpec] | None = None):
        self.depth, self.height, self.width = int(depth), int(height), int(width)
        self.specs = list(specs) if specs is not None else vjepa_mask_specs()
        self.num_tokens = self.depth * self.height * self.width

    def block_size(self, spec: MaskSpec, generator: torch.Generator) -> tuple[int, int, int]:
        """(t, h, w) of one block: time span, then a spatial area and aspect ratio, rounded to cells."""
        t = max(1, int(self.depth * _uniform(*spec.temporal_scale, generator)))
        area = self.height * self.width * _uniform(*spec.spatial_scale, generator)
        ratio = _uniform(*spec.aspect_ratio, generator)
        h = min(self.height, max(1, int(round(math.sqrt(area * ratio)))))
        w = min(self.width, max(1, int(round(math.sqrt(area / ratio)))))
        return t, h, w

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
