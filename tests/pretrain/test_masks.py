"""3D multi-block masks: block sizes, aspect ratios and unions in V-JEPA's ranges; never all hidden."""

import math

import numpy as np
import pytest
import torch

from vidcache.pretrain.masks import MaskSpec, MultiBlockMasks, vjepa_mask_specs


def _grid_masks(masker, enc, pred, b):
    """Visible grid [T, H, W] of clip b from its index lists (before truncation: batch of 1)."""
    keep = torch.zeros(masker.num_tokens, dtype=torch.bool)
    keep[enc[b]] = True
    return keep.view(masker.depth, masker.height, masker.width), pred[b]


def test_block_sizes_follow_scale_and_aspect_ratio():
    # 224 px / patch 16 = 14 x 14 cells, 16 frames / tubelet 2 = 8 time steps (the paper's grid).
    masker = MultiBlockMasks(8, 14, 14)
    short, long = vjepa_mask_specs()
    g = torch.Generator().manual_seed(0)
    for spec, scale in ((short, 0.15), (long, 0.7)):
        for _ in range(200):
            t, h, w = masker.block_size(spec, g)
            assert t == 8  # blocks span every time step
            # Independent check: area of scale * 196 cells split by the ratio, each side rounded.
            area = 196 * scale
            assert abs(h * w - area) <= math.sqrt(area * 1.5) + 1
            assert 0.75 - 0.25 <= h / w <= 1.5 + 0.35  # the sampled ratio, up to rounding to whole cells


def test_masks_span_all_frames_and_unions_are_in_the_papers_ranges():
    masker = MultiBlockMasks(8, 14, 14)
    g = torch.Generator().manual_seed(1)
    ratios = {0: [], 1: []}
    for _ in range(60):
        enc, pred = masker(1, g)
        for kind in (0, 1):
            keep, p = _grid_masks(masker, enc[kind], pred[kind], 0)
            assert (keep == keep[:1]).all(), "a mask must repeat over time"
            assert len(enc[kind][0]) + len(p) == masker.num_tokens
            assert not set(enc[kind][0].tolist()) & set(p.tolist())
            ratios[kind].append(1 - keep.float().mean().item())
    short, long = np.array(ratios[0]), np.array(ratios[1])
    # A union of 8 blocks of 0.15 covers at least one block and at most 8 of them.
    assert short.min() >= 0.14 and short.max() <= min(1.0, 8 * 0.16)
    assert long.min() >= 0.65 and long.max() < 1.0
    # With jepa's block sampling on this grid the unions average ~0.65 (short) and ~0.8 (long): blocks
    # overlap, so the measured ratio sits below the paper's rough "~90%" average.
    assert 0.55 <= short.mean() <= 0.75 and 0.72 <= long.mean() <= 0.9


def test_never_all_tokens_masked_even_on_a_tiny_grid():
    # Two blocks of 0.7 on 2 x 2 cells cover the whole frame most of the time: redraws, then a kept token.
    masker = MultiBlockMasks(2, 2, 2, [MaskSpec(2, (0.7, 0.7), aspect_ratio=(0.75, 1.5))])
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        enc, pred = masker(4, g)
        assert enc[0].shape[0] == 4 and enc[0].shape[1] >= 1
        assert pred[0].shape[1] >= 1


def test_batch_shapes_truncation_and_determinism():
    masker = MultiBlockMasks(4, 6, 6)
    a = masker(5, torch.Generator().manual_seed(3))
    b = masker(5, torch.Generator().manual_seed(3))
    for x, y in zip(a[0] + a[1], b[0] + b[1]):
        assert torch.equal(x, y)
    enc, pred = a
    assert len(enc) == len(pred) == 2
    for e, p in zip(enc, pred):
        assert e.dtype == torch.int64 and e.shape[0] == 5 and p.shape[0] == 5
        assert int(e.max()) < masker.num_tokens and int(p.max()) < masker.num_tokens
        for i in range(5):  # truncated lists still never share a token
            assert not set(e[i].tolist()) & set(p[i].tolist())


@pytest.mark.parametrize("anchor", ["random", "end"])
def test_time_limited_blocks_cover_their_span_and_end_anchored_ones_the_last_steps(anchor):
    masker = MultiBlockMasks(8, 6, 6, [MaskSpec(2, (0.5, 0.5), (0.5, 0.5), temporal_anchor=anchor)])
    g = torch.Generator().manual_seed(2)
    starts = set()
    for _ in range(40):
        enc, pred = masker(1, g)
        keep, _ = _grid_masks(masker, enc[0], pred[0], 0)
        hidden_steps = (~keep).flatten(1).any(1).nonzero().squeeze(1).tolist()
        assert 4 <= len(hidden_steps) <= 8  # two blocks of 4 of the 8 steps
        starts.add(hidden_steps[0])
        if anchor == "end":
            assert hidden_steps == [4, 5, 6, 7]
    if anchor == "random":
        assert len(starts) >= 3


def test_pretrain_config_passes_the_time_fields_to_the_masks():
    from vidcache.pretrain.train import PretrainConfig

    cfg = PretrainConfig(mask_time=0.5, mask_time_anchor="end")
    assert [(s.temporal_scale, s.temporal_anchor) for s in cfg.mask_specs()] == [((0.5, 0.5), "end")] * 2
    problems = PretrainConfig(mask_time=0.0, mask_time_anchor="middle").validate()
    assert any("mask_time must" in p for p in problems) and any("mask_time_anchor" in p for p in problems)


@pytest.mark.parametrize("bad", [MaskSpec(0), MaskSpec(2, (0.5, 0.2)), MaskSpec(2, (0.5, 1.5)),
                                 MaskSpec(2, temporal_anchor="middle")])
def test_invalid_specs_are_reported(bad):
    assert bad.validate()
