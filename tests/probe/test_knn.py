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
