import logging

import numpy as np
import pytest

from vidcache.errors import DataError
from vidcache.probe.data import ProbeData, check_finite, split_off, subsample
from vidcache.probe.metrics import classification_metrics, confusion_matrix, mean_per_class_accuracy, topk_accuracy


def test_metrics_golden_values():
    s = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.4, 0.35, 0.25], [0.2, 0.5, 0.3]])
    y = np.array([0, 2, 1, 0])
    assert topk_accuracy(s, y, 1) == 50.0
    assert topk_accuracy(s, y, 2) == 75.0
    assert topk_accuracy(s, y, 5) == 100.0  # k >= K
    pred = s.argmax(1)
    cm = confusion_matrix(pred, y, 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [1, 0, 0], [0, 0, 1]])
    # classes 0: 1/2, 1: 0/1, 2: 1/1 -> mean 50
    assert mean_per_class_accuracy(pred, y, 3) == pytest.approx(50.0)
    m = classification_metrics(s, y)
    assert m["top1"] == 50.0 and m["top5"] == 100.0 and m["confusion"] == cm.tolist() and m["n"] == 4


def test_topk_ties_go_to_lower_class():
    s = np.array([[0.5, 0.5, 0.0]])
    assert topk_accuracy(s, np.array([0]), 1) == 100.0
    assert topk_accuracy(s, np.array([1]), 1) == 0.0


def test_check_finite_names_row_count(make_clusters):
    d = make_clusters(10, split="train")
    d.x[3, 1, 2] = np.nan
    d.x[7, 0, 0] = np.inf
    with pytest.raises(DataError, match=r"2 of 10 rows hold NaN or inf.*\[3, 7\]"):
        check_finite(d)
    check_finite(make_clusters(10))


def test_subsample_shots_and_fraction_are_class_balanced_and_seeded(make_clusters):
    d = make_clusters(40, k=4)
    s = subsample(d, shots=3, seed=1)
    assert np.bincount(s.y).tolist() == [3, 3, 3, 3]
    np.testing.assert_array_equal(s.x, subsample(d, shots=3, seed=1).x)
    assert not np.array_equal(s.x, subsample(d, shots=3, seed=2).x)
    f = subsample(d, fraction=0.2, seed=0)
    assert np.bincount(f.y).tolist() == [2, 2, 2, 2]
    with pytest.raises(DataError):
        subsample(d, shots=1, fraction=0.5)


def test_subsample_warns_on_short_classes(caplog, make_clusters):
    d = make_clusters(8, k=4)
    with caplog.at_level(logging.WARNING):
        s = subsample(d, shots=5)
    assert len(s) == 8 and "fewer than 5" in caplog.text


def test_split_off_is_disjoint_and_balanced(make_clusters):
    d = make_clusters(40, k=4)
    d.index = np.arange(40)
    tr, va = split_off(d, 0.25, seed=0)
    assert len(set(tr.index) & set(va.index)) == 0 and len(tr) + len(va) == 40
    assert np.bincount(va.y).tolist() == [2, 2, 2, 2]


def test_probe_data_shapes_and_store_dict(make_clusters):
    d = ProbeData(np.zeros((5, 4), np.float32), np.arange(5))
    assert d.x.shape == (5, 1, 4) and d.num_views == 1
    with pytest.raises(DataError, match="labels"):
        ProbeData(np.zeros((5, 2, 4)), np.arange(4))
    sd = {"index": np.arange(4), "label": np.array([0, -1, 1, 1], np.int32),
          "emb": np.ones((4, 2, 3), np.float16), "box": np.zeros((4, 2, 6), np.float32)}
    p = ProbeData.from_store_dict(sd, extras=("box",), split="train")
    assert len(p) == 3 and p.unlabelled == 1 and p.extras["box"].shape == (3, 2, 6)
    np.testing.assert_array_equal(p.index, [0, 2, 3])
    pooled = make_clusters(6, views=3).pooled()
    assert pooled.x.shape == (6, 1, 8)


def test_spatial_views_of_every_grid_protocol():
    from vidcache.probe.data import spatial_views

    assert [spatial_views(p) for p in ("5x3", "vjepa:8x3:0", "vjepa:2x1", "vjepa-aug:8x4:7", "uniform:4",
                                       "random:16:0", "frames:all", "")] == [3, 3, 1, 4, 1, 1, 1, 1]
