"""DAVIS-2017 semi-supervised measures: region similarity J and boundary F-measure.

As davisvideochallenge/davis2017-evaluation computes them (`davis2017/metrics.py`,
`davis2017/evaluation.py`):

- J: the IoU of one object's predicted and true masks in one frame (1 when both are empty);
- F: precision / recall of the object's one-pixel boundaries, a boundary pixel matching when the
  other boundary lies within `ceil(0.008 * image diagonal)` pixels (a disk of that radius);
  precision 1 / recall 0 for an empty prediction of a present object, and so on;
- per sequence, objects are the ids 1..max of the first frame's mask; 255 (void) counts as
  background; the first and the last frames are left out; each object's J and F are the mean
  over its frames, and the overall `J_mean` / `F_mean` are means over all objects of all
  sequences, `JF_mean` their average.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from vidcache.data.davis import VOID


def region_similarity(gt: np.ndarray, pred: np.ndarray) -> float:
    """J of one binary mask pair."""
    gt, pred = gt.astype(bool), pred.astype(bool)
    union = np.logical_or(gt, pred).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(gt, pred).sum() / union)


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundaries of a binary mask: a pixel differing from its right, lower or lower-right
    neighbour (on the last row and column, from the neighbour that exists; the corner pixel never)."""
    m = mask.astype(bool)
    right = np.zeros_like(m)
    down = np.zeros_like(m)
    diag = np.zeros_like(m)
    right[:, :-1] = m[:, 1:]
    down[:-1, :] = m[1:, :]
    diag[:-1, :-1] = m[1:, 1:]
    b = (m ^ right) | (m ^ down) | (m ^ diag)
    b[-1, :] = m[-1, :] ^ right[-1, :]
    b[:, -1] = m[:, -1] ^ down[:, -1]
    b[-1, -1] = False
    return b


def _disk(radius: int) -> np.ndarray:
    r = int(radius)
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    return (x * x + y * y) <= r * r


def boundary_tolerance(shape: tuple[int, int], bound_th: float = 0.008) -> int:
    """Pixels of boundary tolerance: ceil(bound_th x image diagonal) (bound_th >= 1 is in pixels)."""
    return int(bound_th) if bound_th >= 1 else int(math.ceil(bound_th * math.hypot(*shape)))


def boundary_f(gt: np.ndarray, pred: np.ndarray, bound_th: float = 0.008) -> float:
    """F of one binary mask pair."""
    disk = _disk(boundary_tolerance(gt.shape, bound_th))
    pb, gb = boundary_map(pred), boundary_map(gt)
    n_p, n_g = int(pb.sum()), int(gb.sum())
    if n_p == 0 and n_g == 0:
        return 1.0
    if n_p == 0 or n_g == 0:
        return 0.0  # precision 1, recall 0 (or the reverse): F = 0
    p_dil = ndimage.binary_dilation(pb, structure=disk)
    g_dil = ndimage.binary_dilation(gb, structure=disk)
    precision = float((pb & g_dil).sum() / n_p)
    recall = float((gb & p_dil).sum() / n_g)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def sequence_scores(gt: np.ndarray, pred: np.ndarray, bound_th: float = 0.008) -> dict[int, dict]:
    """{object id: {"J": mean, "F": mean, "J_frames": [...], "F_frames": [...]}} of one sequence.

    `gt`, `pred`: uint8 [T, H, W] object ids of every frame from the first (the given mask) to the
    last; frames 0 and T-1 are left out, as the DAVIS toolkit does for the semi-supervised task.
    """
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in shape")
    first = np.where(gt[0] == VOID, 0, gt[0])
    n_obj = int(first.max())
    frames = range(1, gt.shape[0] - 1)
    gt = np.where(gt == VOID, 0, gt)
    out = {}
    for obj in range(1, n_obj + 1):
        js = [region_similarity(gt[t] == obj, pred[t] == obj) for t in frames]
        fs = [boundary_f(gt[t] == obj, pred[t] == obj, bound_th) for t in frames]
        out[obj] = {"J": float(np.mean(js)) if js else float("nan"),
                    "F": float(np.mean(fs)) if fs else float("nan"), "J_frames": js, "F_frames": fs}
    return out


def summarize(per_sequence: dict[str, dict[int, dict]]) -> dict:
    """Overall J_mean, F_mean, JF_mean over all objects of all sequences, and per sequence."""
    js = [o["J"] for objs in per_sequence.values() for o in objs.values()]
    fs = [o["F"] for objs in per_sequence.values() for o in objs.values()]
    seqs = {}
    for name, objs in per_sequence.items():
        j = float(np.nanmean([o["J"] for o in objs.values()])) if objs else float("nan")
        f = float(np.nanmean([o["F"] for o in objs.values()])) if objs else float("nan")
        seqs[name] = {"J_mean": j, "F_mean": f, "JF_mean": (j + f) / 2,
                      "objects": {str(k): {"J": o["J"], "F": o["F"]} for k, o in objs.items()}}
    J = float(np.nanmean(js)) if js else float("nan")
    F = float(np.nanmean(fs)) if fs else float("nan")
    return {"J_mean": J, "F_mean": F, "JF_mean": (J + F) / 2, "num_objects": len(js), "sequences": seqs}
