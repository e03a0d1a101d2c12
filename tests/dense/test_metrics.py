"""DAVIS J and F against values computed by hand on tiny masks."""

import numpy as np
import pytest

from vidcache.dense.metrics import boundary_f, boundary_map, boundary_tolerance, region_similarity, sequence_scores, summarize


def square(shape, r0, r1, c0, c1):
    m = np.zeros(shape, bool)
    m[r0:r1, c0:c1] = True
    return m


def test_region_similarity_by_hand():
    gt = square((10, 10), 2, 6, 2, 6)      # 16 pixels
    pred = square((10, 10), 2, 6, 3, 7)    # shifted one column: 12 shared, union 20
    assert region_similarity(gt, pred) == pytest.approx(0.6)
    assert region_similarity(gt, gt) == 1.0
    assert region_similarity(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0  # both empty
    assert region_similarity(gt, np.zeros_like(gt)) == 0.0


def test_boundary_map_of_one_pixel():
    m = np.zeros((6, 6), bool)
    m[2, 2] = True
    # the boundary sits half a pixel towards the origin: the pixel and its up/left/up-left neighbours
    assert sorted(zip(*np.nonzero(boundary_map(m)))) == [(1, 1), (1, 2), (2, 1), (2, 2)]


def test_boundary_f_by_hand():
    gt, pred = np.zeros((6, 6), bool), np.zeros((6, 6), bool)
    gt[2, 2] = pred[2, 4] = True
    # tolerance ceil(0.008 * sqrt(72)) = 1 (a plus-shaped disk): boundaries {(1,1),(1,2),(2,1),(2,2)} and
    # {(1,3),(1,4),(2,3),(2,4)}; two of four pixels match each way -> precision = recall = 0.5 -> F = 0.5
    assert boundary_tolerance((6, 6)) == 1
    assert boundary_f(gt, pred) == pytest.approx(0.5)
    assert boundary_f(gt, gt) == 1.0
    assert boundary_f(gt, np.zeros_like(gt)) == 0.0      # precision 1, recall 0
    assert boundary_f(np.zeros_like(gt), gt) == 0.0      # precision 0, recall 1
    assert boundary_f(np.zeros_like(gt), np.zeros_like(gt)) == 1.0
    # two columns apart is outside a 1-pixel tolerance, inside a 2-pixel one
    pred2 = np.zeros((6, 6), bool)
    pred2[2, 5] = True
    assert boundary_f(gt, pred2) == 0.0
    assert boundary_f(gt, pred2, bound_th=2) == pytest.approx(0.5)


def test_tolerance_on_davis_frames():
    assert boundary_tolerance((480, 854)) == 8  # ceil(0.008 * 979.7)


def test_sequence_scores_skip_first_and_last_and_average_objects():
    T, shape = 4, (8, 8)
    gt = np.zeros((T, *shape), np.uint8)
    gt[:, 1:4, 1:4] = 1
    gt[:, 5:7, 5:7] = 2
    gt[1, 0, 0] = 255  # void counts as background
    pred = gt.copy()
    pred[1, 0, 0] = 0
    pred[2][pred[2] == 2] = 0          # object 2 lost in frame 2
    pred[3] = 0                        # the last frame is not evaluated
    pred[0] = 0                        # nor the first
    s = sequence_scores(gt, pred)
    assert s[1]["J"] == 1.0 and s[1]["F"] == 1.0
    assert s[2]["J_frames"] == [1.0, 0.0] and s[2]["J"] == 0.5 and s[2]["F"] == 0.5
    summ = summarize({"a": s, "b": {1: {"J": 0.2, "F": 0.4}}})
    assert summ["J_mean"] == pytest.approx((1 + 0.5 + 0.2) / 3)
    assert summ["F_mean"] == pytest.approx((1 + 0.5 + 0.4) / 3)
    assert summ["JF_mean"] == pytest.approx((summ["J_mean"] + summ["F_mean"]) / 2)
    assert summ["sequences"]["a"]["J_mean"] == 0.75 and summ["num_objects"] == 3
