"""Classification metrics on score matrices: top-k, mean per-class accuracy, confusion matrix.

Accuracies are percentages. Scores are [n, K] (probabilities or logits: only their order matters);
ties in top-k are broken towards the lower class id, like `np.argsort(-s, kind="stable")`.
"""

from __future__ import annotations

import numpy as np


def topk_predictions(scores: np.ndarray, k: int) -> np.ndarray:
    """Class ids of the k highest scores per row, best first: int64 [n, min(k, K)]."""
    scores = np.asarray(scores)
    k = min(int(k), scores.shape[1])
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Percent of rows whose label is among the k highest scores (100 when k >= K)."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        return float("nan")
    hit = (topk_predictions(scores, k) == labels[:, None]).any(axis=1)
    return float(100.0 * hit.mean())


def confusion_matrix(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 [K, K]: row = true class, column = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return cm


def per_class_accuracy(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Percent correct per class; NaN for classes with no example."""
    cm = confusion_matrix(pred, labels, num_classes)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, 100.0 * np.diag(cm) / np.maximum(support, 1), np.nan)


def mean_per_class_accuracy(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """Mean of the per-class accuracies over the classes that occur in `labels`."""
    acc = per_class_accuracy(pred, labels, num_classes)
    return float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan")


def classification_metrics(scores: np.ndarray, labels: np.ndarray, topk: tuple[int, ...] = (1, 5),
                           confusion: bool = True) -> dict:
    """top-k accuracies, mean per-class accuracy, NLL (if scores are probabilities) and confusion."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    num_classes = scores.shape[1]
    pred = topk_predictions(scores, 1)[:, 0]
    out: dict = {f"top{k}": topk_accuracy(scores, labels, k) for k in topk}
    out["mean_class_acc"] = mean_per_class_accuracy(pred, labels, num_classes)
    out["n"] = int(len(labels))
    if confusion:
        out["confusion"] = confusion_matrix(pred, labels, num_classes).tolist()
    return out
