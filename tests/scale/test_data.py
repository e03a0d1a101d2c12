"""Set sampling and masking for SCALE."""

import numpy as np
import pytest
import torch

from vidcache.config import check
from vidcache.errors import ConfigError, DataError
from vidcache.scale.config import ScaleConfig
from vidcache.scale.data import ClipSets, embedding_stats, sample_sets


def test_sets_are_disjoint_and_masks_have_exact_count():
    g = torch.Generator().manual_seed(0)
    idx, mask = sample_sets(64, 16, 8, 2, g)
    assert idx.shape == (64, 2, 8) and mask.shape == (64, 2, 8)
    for v in range(64):
        assert len(set(idx[v].flatten().tolist())) == 16  # 2K distinct clips of 16
    assert (mask.sum(-1) == 2).all()
    # Every position is masked sometimes: the masked subset is uniform, not a fixed slot.
    assert mask.float().mean((0, 1)).min() > 0.1


@pytest.mark.parametrize("K,ratio,want", [(8, 0.25, 2), (8, 0.2, 2), (4, 0.25, 1), (2, 0.9, 1), (3, 0.01, 1), (10, 0.99, 9)])
def test_num_masked_respects_ratio_never_zero_never_all(K, ratio, want):
    cfg = ScaleConfig(clips_per_set=K, mask_ratio=ratio)
    assert cfg.num_masked == want
    g = torch.Generator().manual_seed(K)
    _, mask = sample_sets(32, 2 * K, K, cfg.num_masked, g)
    per_set = mask.sum(-1)
    assert (per_set >= 1).all() and (per_set < K).all()
    assert (per_set == want).all()


def test_sampling_is_deterministic_per_generator():
    a = sample_sets(8, 16, 4, 1, torch.Generator().manual_seed(3))
    b = sample_sets(8, 16, 4, 1, torch.Generator().manual_seed(3))
    c = sample_sets(8, 16, 4, 1, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_too_few_clips_is_a_data_error():
    with pytest.raises(DataError, match="random:16"):
        sample_sets(2, 8, 8, 2, torch.Generator())


def test_clip_sets_gather_embeddings_with_their_own_boxes():
    V, C, D = 10, 6, 3
    emb = np.zeros((V, C, D), np.float16)
    emb[..., 0] = np.arange(V)[:, None]
    emb[..., 1] = np.arange(C)[None, :]
    box = np.zeros((V, C, 6), np.float32)
    box[..., 0] = np.arange(V)[:, None] / V
    box[..., 2] = np.arange(C)[None, :] / C
    data = ClipSets.from_arrays(emb, box)
    seen = []
    for e, b, m in data.epoch(0, batch_size=4, clips_per_set=3, num_masked=1, seed=0):
        assert e.shape[1:] == (2, 3, D) and b.shape[1:] == (2, 3, 6) and m.shape == e.shape[:3]
        assert torch.allclose(e[..., 0].float() / V, b[..., 0])          # same video
        assert torch.allclose(e[..., 1].float() / C, b[..., 2], atol=1e-6)  # same clip
        for row in e[..., 0]:
            assert len(set(row.flatten().tolist())) == 1  # one video per row
        seen += e[:, 0, 0, 0].tolist()
    assert sorted(seen) == list(range(V))  # each video once per epoch
    a = [x[0] for x in data.epoch(1, 4, 3, 1, seed=0)]
    b = [x[0] for x in data.epoch(1, 4, 3, 1, seed=0)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_clip_sets_refuse_nan_and_bad_shapes():
    emb = np.ones((2, 4, 3), np.float16)
    emb[1, 2, 0] = np.nan
    with pytest.raises(DataError, match="row 1"):
        ClipSets.from_arrays(emb, np.zeros((2, 4, 6), np.float32))
    with pytest.raises(DataError, match="box"):
        ClipSets.from_arrays(np.ones((2, 4, 3), np.float16), np.zeros((2, 4, 5), np.float32))
    with pytest.raises(DataError, match="no done videos"):
        ClipSets.from_arrays(np.ones((0, 4, 3), np.float16), np.zeros((0, 4, 6), np.float32))


def test_embedding_stats_match_numpy():
    x = np.random.default_rng(0).normal(3.0, 2.0, (50, 4, 7)).astype(np.float16)
    mean, std = embedding_stats(x, chunk=33)
    flat = x.reshape(-1, 7).astype(np.float64)
    np.testing.assert_allclose(mean.numpy(), flat.mean(0), rtol=1e-5)
    np.testing.assert_allclose(std.numpy(), flat.std(0), rtol=1e-4)


def test_config_reports_every_problem_at_once():
    with pytest.raises(ConfigError) as e:
        check(ScaleConfig(clips_per_set=1, mask_ratio=1.5, num_heads=3, temperature=0, device="tpu"))
    assert e.value.problems == [
        "num_heads (3) must divide hidden_dim (256)",
        "temperature must be > 0 (got 0)",
        "clips_per_set must be >= 2 so a set keeps an unmasked clip (got 1)",
        "mask_ratio must be in (0, 1) (got 1.5)",
        "device must be 'auto', 'cpu' or 'cuda[:i]' (got 'tpu')",
    ]
    assert str(e.value).startswith("invalid ScaleConfig: num_heads (3) must divide hidden_dim (256); ")
    ok = ScaleConfig()
    assert check(ok) is ok and ok.validate() == []  # the defaults pass, and check returns the config itself


def test_bernoulli_masking_of_the_official_form():
    # Separius/SCALE Scale.forward: torch.rand(...) < mask_ratio per clip; some sets get none, some more.
    g = torch.Generator().manual_seed(0)
    idx, mask = sample_sets(2000, 16, 8, 0, g, mask_ratio=0.25)
    assert idx.shape == mask.shape == (2000, 2, 8)
    assert abs(mask.float().mean().item() - 0.25) < 0.01
    per_set = mask.sum(-1).flatten()
    assert (per_set == 0).any() and (per_set > 2).any()
    assert ScaleConfig().bernoulli_masking and not ScaleConfig(loss_form="thesis").bernoulli_masking
