"""Reading probe results: a rich table per run, the grid, and accuracy split by class groups."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from rich.table import Table

from vidcache.probe.metrics import topk_predictions


def _fmt(v, std=None) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    return f"{v:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def _selected(sel: dict) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sel.items() if k != "index")


def results_table(results: dict | Sequence[dict], title: str = "probe results") -> Table:
    """One row per results dict (as written to results.json): selected hyper-parameters, val / test."""
    rows = [results] if isinstance(results, dict) else list(results)
    t = Table(title=title)
    cols = ("probe", "protocol", "selected", "reported top1", "report", "val top1", "test top1", "test top5",
            "test mean-class", "train n")
    for col in cols:
        t.add_column(col, justify="left" if col in ("probe", "protocol", "selected", "report") else "right",
                     overflow="fold")
    for r in rows:
        val, test, std = r.get("val", {}), r.get("test", {}), r.get("test_std", {})
        rep = r.get("reported") or {}
        t.add_row(str(r.get("probe", "?")), str(r.get("preset") or "-"), _selected(r.get("selected", {})),
                  _fmt(rep.get("top1"), (rep.get("std") or {}).get("top1")), report_label(r),
                  _fmt(val.get("top1")), _fmt(test.get("top1"), std.get("top1")),
                  _fmt(test.get("top5"), std.get("top5")),
                  _fmt(test.get("mean_class_acc"), std.get("mean_class_acc")), str(r.get("num_train", "-")))
    return t


def report_label(r: dict) -> str:
    """How the reported number was obtained, e.g. "test (selected on val)" or "best-val"."""
    mode = r.get("report")
    if mode is None:
        return "test (selected on val)" if r.get("test") else "-"
    return "test (selected on val)" if mode == "test" else "best-val (best head on val)"


def grid_table(results: dict, title: str = "grid (selected on val)") -> Table:
    """Every grid point with its val scores; the selected one is marked."""
    grid = results.get("grid", [])
    t = Table(title=title)
    if not grid:
        return t
    cols = list(grid[0])
    for c in ("", *cols):
        t.add_column(c, justify="right")
    sel = results.get("selected", {})
    for i, g in enumerate(grid):
        mark = "*" if all(g.get(k) == v for k, v in sel.items() if k in g) else ""
        t.add_row(mark, *[(_fmt(g[c]) if c.startswith(("val_", "train_")) else f"{g[c]:g}")
                          if isinstance(g[c], float) else str(g[c]) for c in cols])
    return t


def accuracy_by_group(scores: np.ndarray, labels: np.ndarray, classes: Sequence[str],
                      group: Callable[[str], str | None]) -> dict[str, dict]:
    """Top-1 accuracy per class group, e.g. motion vs appearance classes.

    `group(class_name)` returns the group's name, or None to leave the class out. Returns
    {group: {"top1", "mean_class_acc", "n", "classes"}}.
    """
    labels = np.asarray(labels, dtype=np.int64)
    pred = topk_predictions(scores, 1)[:, 0]
    names = {c: group(classes[c]) for c in np.unique(labels)}
    out: dict[str, dict] = {}
    for g in sorted({v for v in names.values() if v is not None}):
        cls = [c for c, v in names.items() if v == g]
        rows = np.isin(labels, cls)
        per = [float((pred[labels == c] == c).mean() * 100) for c in cls]
        out[g] = {"top1": float((pred[rows] == labels[rows]).mean() * 100), "mean_class_acc": float(np.mean(per)),
                  "n": int(rows.sum()), "classes": len(cls)}
    return out
