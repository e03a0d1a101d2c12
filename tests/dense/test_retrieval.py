"""Hummingbird retrieval: patch labels by hand, faiss kNN and aggregation against brute force, end to end."""

import json

import numpy as np
import pytest
import torch

from vidcache.data.davis import manifest_from_davis, read_mask
from vidcache.dense.retrieval import (
    RetrievalConfig,
    aggregate,
    label_map_to_ids,
    miou,
    patch_labels,
    rare_class_patches,
    run_retrieval,
)
from vidcache.errors import ConfigError
from vidcache.extract.clips import ClipExtractConfig, extract_clips
from vidcache.probe.knn import l2_normalize, search


def test_patch_labels_by_hand():
    mask = np.zeros((4, 4), np.uint8)
    mask[0, 0] = 1
    mask[0, 1] = 2
    mask[3, 3] = 255  # void -> class 0 in the bank
    lab = patch_labels(mask, (2, 2), 2, 3)
    np.testing.assert_allclose(lab[0], [0.5, 0.25, 0.25])
    np.testing.assert_allclose(lab[1:], [[1, 0, 0]] * 3)
    # a mask at another size is resized (nearest) to the grid's pixels first
    big = np.kron(mask, np.ones((2, 2), np.uint8))
    np.testing.assert_allclose(patch_labels(big, (2, 2), 2, 3), lab)


def test_faiss_search_and_aggregation_equal_brute_force():
    rng = np.random.default_rng(0)
    bank = l2_normalize(rng.normal(size=(500, 16)))
    labels = rng.dirichlet(np.ones(4), size=500).astype(np.float32)
    q = rng.normal(size=(40, 16)).astype(np.float32)
    sim, idx = search(bank, l2_normalize(q), 30)
    cos = l2_normalize(q).astype(np.float64) @ bank.T.astype(np.float64)
    ref_idx = np.argsort(-cos, axis=1, kind="stable")[:, :30]
    np.testing.assert_array_equal(idx, ref_idx)
    ours = aggregate(sim, labels[idx], 0.02)
    # open-hummingbird-eval's _cross_attention, re-typed: softmax(q.k / beta) over the neighbours
    qn = torch.nn.functional.normalize(torch.as_tensor(q, dtype=torch.float64), dim=-1)
    kn = torch.as_tensor(bank[ref_idx], dtype=torch.float64)
    attn = torch.softmax(torch.einsum("qd,qkd->qk", qn, kn) / 0.02, dim=-1)
    ref = torch.einsum("qk,qkc->qc", attn, torch.as_tensor(labels[ref_idx], dtype=torch.float64)).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_rare_class_patches_as_the_reference():
    """open-hummingbird-eval _sample_features: score = sum over present classes (background included) of
    the number of patches holding them, times U(0, 1); the smallest scores are kept."""
    rng = np.random.default_rng(3)
    lab = np.zeros((40, 3), np.float32)
    lab[:, 0] = 1
    lab[30:, 0], lab[30:, 2] = 0, 1  # ten patches of class 2 only
    lab[:5, 1] = 0.5  # five patches shared by classes 0 and 1
    keep = rare_class_patches(lab, 8, np.random.default_rng(7))
    freq = np.array([35, 5, 10])
    ref_scores = (lab > 0).astype(float) @ freq * np.random.default_rng(7).random(40)
    np.testing.assert_array_equal(keep, np.argsort(ref_scores, kind="stable")[:8])
    # patches of the rarer class 2 (score 10 u) are kept far more often than background (35 u)
    counts = np.zeros(40)
    for seed in range(200):
        counts[rare_class_patches(lab, 8, np.random.default_rng(seed))] += 1
    assert counts[30:].mean() > 2.5 * counts[5:30].mean()


def test_label_map_upsampling_and_miou():
    scores = np.array([[1, 0], [0, 1], [0, 1], [1, 0]], np.float32)  # 2 x 2 grid, diagonal class 0
    ids = label_map_to_ids(scores, (2, 2), (4, 4))
    assert ids[0, 0] == 0 and ids[0, 3] == 1 and ids[3, 0] == 1 and ids[3, 3] == 0
    conf = np.array([[3, 1], [0, 4]])
    m, per = miou(conf)
    assert per == pytest.approx([3 / 4, 4 / 5]) and m == pytest.approx((0.75 + 0.8) / 2)


def test_config_problems_together():
    with pytest.raises(ConfigError) as e:
        from vidcache.config import check

        check(RetrievalConfig(k=0, labels="x", split="train"))
    assert "k must" in str(e.value) and "labels" in str(e.value) and "both" in str(e.value)


def test_retrieval_end_to_end_on_davis_tree(tmp_path, make_davis):
    root = make_davis(tmp_path / "d", seqs=(("a", "train", 4), ("b", "train", 4), ("c", "val", 5)))
    cfg = ClipExtractConfig(backbone="tiny_frame", backbone_options={"patch_size": 4}, protocol="frames:all",
                            tokens="full", short_side=48, size_multiple=8, workers=0)
    extract_clips(manifest_from_davis(root), tmp_path / "s.zarr", cfg)
    res = run_retrieval(tmp_path / "s.zarr", tmp_path / "out", RetrievalConfig(k=10, device="cpu"))
    assert res["num_classes"] == 3 and res["bank_patches"] == 2 * 4 * 12 * 16
    # same scene in train and val: retrieval finds the two squares
    assert res["mIoU"] > 0.6
    pred = read_mask(tmp_path / "out" / "Annotations" / "c" / "00004.png")
    gt = read_mask(root / "Annotations/480p/c/00004.png")
    assert pred.shape == gt.shape and (pred == gt).mean() > 0.9
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["mIoU"] == res["mIoU"]
    small = run_retrieval(tmp_path / "s.zarr", tmp_path / "out2", RetrievalConfig(k=10, bank_size=100, device="cpu"))
    assert small["bank_patches"] == 8 * 12  # 100 // 8 frames = 12 patches per frame
