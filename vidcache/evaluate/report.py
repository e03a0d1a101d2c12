"""The results table: rows/ merged into results.json and results.csv, plots, and the live view.

Plots (PNG, one file each):
- `<dataset>_vs_step.png`: one panel per probe, test top-1 against training step, one line per run
  (checkpoint folder); checkpoints without a step (registry baselines) are dashed horizontal lines.
- `accuracy_vs_flops.png`: one panel per dataset, test top-1 against inference GFLOPs per clip
  (log scale), one marker per probe: "Where should I spend my FLOPS?".
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import json
from contextlib import contextmanager
from pathlib import Path

from vidcache.config import canonical_json, save_json

# The columns of results.csv and the keys of every results.json row: the report's schema.
ROW_FIELDS = ["checkpoint", "run", "step", "step_unit", "dataset", "probe", "status", "metric", "test_top1",
              "val_top1", "test_top5", "test_mean_class_acc", "selected", "flops_per_clip", "store_hash",
              "weights", "probe_hash", "cached", "extract_s", "probe_s", "error", "probe_type", "step_source",
              "store", "time", "report"]

PLOT_VERSION = 1  # bump when the plots change, so cached plots are redrawn


def collect_rows(results_dir: str | Path) -> list[dict]:
    """Every row file under results_dir/rows, sorted by dataset, probe, run, step, checkpoint."""
    rows = []
    for f in sorted((Path(results_dir) / "rows").glob("*.json")):
        try:
            rows.append(json.loads(f.read_text()))
        except (OSError, json.JSONDecodeError):  # a temp file of a killed writer: not a row yet
            continue
    rows.sort(key=lambda r: (r.get("dataset", ""), r.get("probe", ""), r.get("run", ""),
                             r.get("step") is None, r.get("step") or 0, r.get("checkpoint", "")))
    return rows


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def write_results(results_dir: str | Path, plots: bool = True) -> list[dict]:
    """Rebuild results.json, results.csv and the plots from the row files (under a file lock).

    The plots are redrawn only when the rows changed, so a rerun with everything cached stays fast.
    """
    results_dir = Path(results_dir)
    with _locked(results_dir / ".table.lock"):
        rows = collect_rows(results_dir)
        digest = hashlib.sha256(canonical_json([PLOT_VERSION, [{k: r.get(k) for k in ROW_FIELDS if k not in
                                                                  ("cached", "probe_s", "extract_s", "time")}
                                                                 for r in rows]]).encode()).hexdigest()
        old = results_dir / "results.json"
        try:
            same = json.loads(old.read_text()).get("digest") == digest
        except (OSError, json.JSONDecodeError):
            same = False
        save_json({"rows": rows, "digest": digest, "fields": ROW_FIELDS}, old)
        tmp = results_dir / "results.csv.tmp"
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=ROW_FIELDS, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({k: (json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v)
                            for k, v in r.items()})
        tmp.replace(results_dir / "results.csv")
        if plots and (not same or not (results_dir / "plots").is_dir()):
            make_plots(rows, results_dir / "plots")
    return rows


def make_plots(rows: list[dict], out_dir: str | Path) -> list[Path]:
    """Accuracy vs step per dataset (one panel per probe) and accuracy vs FLOPs; returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ok = [r for r in rows if r.get("status") == "ok" and r.get("metric") is not None]
    written = []
    for ds in sorted({r["dataset"] for r in ok}):
        sub = [r for r in ok if r["dataset"] == ds]
        probes = sorted({r["probe"] for r in sub})
        cols = min(3, len(probes))
        nrows = -(-len(probes) // cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 3.6 * nrows), squeeze=False)
        for ax, probe in zip(axes.flat, probes):
            pr = [r for r in sub if r["probe"] == probe]
            units = {r.get("step_unit") or "step" for r in pr if r.get("step") is not None}
            for run in sorted({r["run"] for r in pr}):
                pts = sorted((r["step"], r["metric"]) for r in pr if r["run"] == run and r.get("step") is not None)
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=run)
            for r in pr:
                if r.get("step") is None:
                    line = ax.axhline(r["metric"], linestyle="--", linewidth=1, color="gray")
                    line.set_label(f"{r['checkpoint']} (no step)")
            ax.set_title(f"{ds} - {probe}")
            ax.set_xlabel(" / ".join(sorted(units)) or "step")
            ax.set_ylabel("test top-1 (%)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="best")
        for ax in list(axes.flat)[len(probes):]:
            ax.axis("off")
        fig.tight_layout()
        path = out / f"{_safe(ds)}_vs_step.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    flop_rows = [r for r in ok if r.get("flops_per_clip")]
    if flop_rows:
        datasets = sorted({r["dataset"] for r in flop_rows})
        fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 4), squeeze=False)
        markers = "osD^v<>ph*"
        for ax, ds in zip(axes.flat, datasets):
            sub = [r for r in flop_rows if r["dataset"] == ds]
            for i, probe in enumerate(sorted({r["probe"] for r in sub})):
                pts = [(r["flops_per_clip"] / 1e9, r["metric"], r) for r in sub if r["probe"] == probe]
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=markers[i % len(markers)],
                           label=probe, alpha=0.8)
            ax.set_xscale("log")
            ax.set_xlabel("inference GFLOPs per clip (log)")
            ax.set_ylabel("test top-1 (%)")
            ax.set_title(f"{ds}: accuracy vs compute")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / "accuracy_vs_flops.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _fmt(v, pct: bool = False) -> str:
    if v is None:
        return "-"
    if pct:
        return f"{v:.1f}"
    return str(v)


def rows_table(rows: list[dict], title: str = "vidcache eval"):
    """A rich Table of rows: checkpoint, step, dataset, probe, val/test top-1, GFLOPs, status."""
    from rich.table import Table

    t = Table(title=title)
    for col in ("checkpoint", "step", "dataset", "probe", "reported", "report", "val top1", "test top1",
                "GFLOPs/clip", "status"):
        t.add_column(col, overflow="fold")
    for r in rows:
        flops = r.get("flops_per_clip")
        status = r.get("status", "")
        if status == "error":
            status = f"[red]error: {r.get('error', '')}[/red]"
        elif r.get("cached"):
            status = "cached"
        t.add_row(str(r.get("checkpoint", "")), _fmt(r.get("step")), str(r.get("dataset", "")),
                  str(r.get("probe", "")), _fmt(r.get("metric"), True), str(r.get("report") or "test"),
                  _fmt(r.get("val_top1"), True), _fmt(r.get("test_top1"), True),
                  f"{flops / 1e9:.3g}" if flops else "-", status)
    return t


class LiveTable:
    """The rows of this run in a rich Live table (a no-op when not enabled)."""

    def __init__(self, enabled: bool):
        self.rows: list[dict] = []
        self.live = None
        if enabled:
            from rich.live import Live

            self.live = Live(rows_table([]), refresh_per_second=4)
            self.live.start()

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if self.live is not None:
            self.live.update(rows_table(self.rows))

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
