import json

import numpy as np
import pytest

from vidcache.probe.knn import KNNConfig, KNNProbe, knn_scores, l2_normalize


def dino_reference(train, train_y, query, k, num_classes, t=0.07):
    """DINO's weighted kNN, brute force in numpy; ties ordered by train index."""
    sim = query @ train.T
    out = np.zeros((len(query), num_classes))
    for i in range(len(query)):
        order = np.lexsort((np.arange(len(train)), -sim[i]))[:k]
        for j in order:
            out[i, train_y[j]] += np.exp(sim[i, j] / t)
    return out


def test_knn_matches_brute_force_for_every_k_including_k_above_n_train():
    rng = np.random.default_rng(0)
    train = l2_normalize(rng.normal(size=(30, 6)))
    train_y = rng.integers(0, 4, 30)
    q = l2_normalize(rng.normal(size=(12, 6)))
    ks = [1, 5, 20, 50]  # 50 > 30 training samples
    got = knn_scores(train, train_y, q, ks, 4, 0.07)
    for k in ks:
        np.testing.assert_allclose(got[k], dino_reference(train, train_y, q, min(k, 30), 4), rtol=1e-4)


def test_knn_ties_and_tiny_classes():
    # Exact duplicates tie; class 3 has a single member, smaller than k.
    base = l2_normalize(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], np.float32))
    train = np.concatenate([base[:3], base[:3], base[3:]])
    train_y = np.array([0, 1, 2, 0, 2, 2, 3])  # the duplicate of row 1 carries a different label
    q = l2_normalize(np.array([[1, 0.1, 0], [0, 1, 0.05], [0.6, 0.6, 0.1]], np.float32))
    for k in (2, 3, 4, 7, 10):
        got = knn_scores(train, train_y, q, [k], 4)[k]
        np.testing.assert_allclose(got, dino_reference(train, train_y, q, min(k, 7), 4), rtol=1e-4)
    # Query 1 equals training row 1 and its duplicate (row 4): both labels get exp(1/T) at k=2.
    s = knn_scores(train, train_y, q[1:2], [2], 4)[2]
    assert s[0, 1] == pytest.approx(s[0, 2], rel=1e-5) and s[0, 0] == 0 and s[0, 3] == 0


def test_knn_probe_selects_k_on_val_and_views(make_clusters):
    tr, va, te = make_clusters(60, k=3, seed=0), make_clusters(30, k=3, seed=1), make_clusters(30, k=3, seed=2)
    for views in ("mean", "vote"):
        p = KNNProbe(KNNConfig(ks=[1, 3, 200], views=views)).fit(tr, va)
        assert p.k in (1, 3, 200)
        assert p.metrics["val"]["top1"] == max(m["top1"] for m in p.val_by_k.values())
        probs = p.predict(te)
        np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-6)
        assert p.evaluate(te)["top1"] > 80


def test_knn_mean_views_equal_manual_mean_of_normalised_clips(make_clusters):
    tr, te = make_clusters(20, k=2, seed=0), make_clusters(5, k=2, seed=1)
    p = KNNProbe(KNNConfig(ks=[5])).fit(tr, make_clusters(6, k=2, seed=3))
    bank = l2_normalize(l2_normalize(tr.x).mean(1))
    q = l2_normalize(l2_normalize(te.x).mean(1))
    ref = dino_reference(bank, tr.y, q, 5, 2)
    np.testing.assert_allclose(p.predict(te), ref / ref.sum(1, keepdims=True), rtol=1e-4)


def test_knn_vote_sums_clip_votes(make_clusters):
    tr, te = make_clusters(20, k=2, seed=0), make_clusters(5, k=2, seed=1)
    p = KNNProbe(KNNConfig(ks=[4], views="vote")).fit(tr, make_clusters(6, k=2, seed=3))
    bank = l2_normalize(tr.x).reshape(-1, 8)
    q = l2_normalize(te.x).reshape(-1, 8)
    ref = dino_reference(bank, np.repeat(tr.y, 3), q, 4, 2).reshape(5, 3, 2).sum(1)
    np.testing.assert_allclose(p.predict(te), ref / ref.sum(1, keepdims=True), rtol=1e-4)


@pytest.mark.gpu
def test_knn_gpu_equals_cpu():
    torch = pytest.importorskip("torch")
    import faiss
    if not torch.cuda.is_available() or faiss.get_num_gpus() == 0:
        pytest.skip("needs CUDA and faiss-gpu")
    rng = np.random.default_rng(0)
    train, q = l2_normalize(rng.normal(size=(500, 16))), l2_normalize(rng.normal(size=(50, 16)))
    y = rng.integers(0, 5, 500)
    a = knn_scores(train, y, q, [10], 5, gpu=False)[10]
    b = knn_scores(train, y, q, [10], 5, gpu=True)[10]
    np.testing.assert_allclose(a, b, rtol=1e-3)


@pytest.mark.parametrize("cfg, k, val_by_k, test_top1, first_rows", [
    (KNNConfig(ks=[5, 15], views="mean", temperature=0.5), 15, {5: 75.0, 15: 79.16666666666666}, 58.333333333333336,
     [[0.361478729, 0.4624016101, 0.0601830387, 0.1159366222],
      [0.0973793738, 0.6058175651, 0.1742262468, 0.1225768142]]),
    # k = 5 and 15 tie on val: the smaller k is kept
    (KNNConfig(ks=[1, 5, 15], views="vote"), 5, {1: 45.83333333333333, 5: 54.166666666666664, 15: 54.166666666666664},
     41.66666666666667,
     [[0.4707202266, 0.463108417, 0.0351480093, 0.031023347],
      [0.1384599052, 0.3098570957, 0.2899340621, 0.261748937]]),
])
def test_knn_probe_golden_values(make_clusters, cfg, k, val_by_k, test_top1, first_rows):
    """Pinned numbers of a noisy 4-class problem (computed once, kept through refactors of the probe)."""
    tr, va, te = (make_clusters(n, k=4, noise=5.0, seed=s) for n, s in ((40, 0), (24, 1), (24, 2)))
    p = KNNProbe(cfg).fit(tr, va)
    assert p.k == k
    assert {kk: m["top1"] for kk, m in p.val_by_k.items()} == pytest.approx(val_by_k, abs=1e-9)
    assert p.evaluate(te)["top1"] == pytest.approx(test_top1, abs=1e-9)
    np.testing.assert_allclose(p.predict(te)[:2], first_rows, rtol=1e-6, atol=1e-9)


def _probes():
    from vidcache.probe.config import LinearConfig
    from vidcache.probe.linear import LinearProbe

    return [LinearProbe(LinearConfig(epochs=1, batch_size=8, lrs=[1e-2], wds=[0.0], device="cpu")),
            KNNProbe(KNNConfig(ks=[3]))]


@pytest.mark.parametrize("probe", _probes(), ids=["linear", "knn"])
def test_knn_and_trained_probes_make_the_same_fit_checks(make_clusters, probe):
    import dataclasses

    from vidcache.errors import DataError

    tr, va = make_clusters(12, k=3, seed=0, split="train"), make_clusters(6, k=3, seed=1, split="val")
    with pytest.raises(DataError, match="split 'val' has no labelled, finished videos"):
        probe.fit(tr, va.subset(np.arange(0)))
    bad = tr.x.copy()
    bad[2, 0, 0] = np.nan
    with pytest.raises(DataError, match="features of split 'train'.*NaN"):
        probe.fit(dataclasses.replace(tr, x=bad), va)
    probe.num_classes = 2  # labels 0..2 do not fit two classes
    with pytest.raises(DataError, match="split 'train' has label 2 but the probe has 2 classes"):
        probe.fit(tr, va)


def test_knn_results_json_has_the_fields_of_the_trained_probes(make_clusters, tmp_path):
    from vidcache.probe.config import LinearConfig
    from vidcache.probe.run import run_probe

    data = {"train": make_clusters(12, k=3, seed=0), "val": make_clusters(6, k=3, seed=1),
            "test": make_clusters(6, k=3, seed=2)}
    knn = run_probe("knn", data, tmp_path / "knn", KNNConfig(ks=[3], views="vote"))
    lin = run_probe("linear", data, tmp_path / "lin", LinearConfig(epochs=1, batch_size=8, lrs=[1e-2], wds=[0.0],
                                                                   device="cpu"))
    on_disk = {n: json.loads((tmp_path / n / "results.json").read_text()) for n in ("knn", "lin")}
    assert set(on_disk["knn"]) == set(on_disk["lin"]) == set(knn) == set(lin)
    assert {"report", "reported", "selected", "grid", "num_train", "train_samples", "fit_seconds"} <= set(knn)
    assert knn["report"] == "test" and knn["reported"]["top1"] == knn["test"]["top1"]
    assert knn["num_train"] == 12 and knn["train_samples"] == 36  # views=vote: every clip is in the bank
    assert (tmp_path / "knn" / "config.json").is_file()
