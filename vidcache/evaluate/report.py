"""The results table: rows/ merged into results.json and results.csv, plots, and the live view.

Plots (PNG, one file each):
- `<dataset>_vs_step.png`: one panel per probe, test top-1 against training step, one line per run
  (checkpoint folder); checkpoints without a step (registry baselines) are dashed horizontal lines.
- `<dataset>_vs_pretrain_flops.png`: one panel per probe, test top-1 against the checkpoint's
  pretraining FLOPs (`pretrain_flops`, log scale), one line per run; each run's initialisation (0
  FLOPs) is a dotted line of its colour. Rows without pretraining FLOPs (hub and registry backbones)
  are left out, named in a note under the panels.
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
              "val_top1", "test_top5", "test_mean_class_acc", "selected", "flops_per_clip", "pretrain_flops",
              "store_hash", "weights", "probe_hash", "cached", "extract_s", "probe_s", "error", "probe_type",
              "step_source", "store", "time", "report"]

PLOT_VERSION = 2  # bump when the plots change, so cached plots are redrawn


def collect_rows(results_dir: str | Path) -> list[dict]:
    """The current row files under results_dir/rows, sorted by dataset, probe, run, step, checkpoint.

    A probe run again under the same name with other settings (another `probe_hash`) supersedes its
    earlier row for the same checkpoint weights and dataset: the newest row file wins (run_plan rewrites
    a row file each time it reports it, cached or not). The older file stays, so switching back to the
    earlier settings is a cached rerun. Rows of earlier weights of a file are history and are kept.
    """
    latest: dict[tuple, tuple[int, dict]] = {}
    for f in sorted((Path(results_dir) / "rows").glob("*.json")):
        try:
            row = json.loads(f.read_text())
            written = f.stat().st_mtime_ns
        except (OSError, json.JSONDecodeError):  # a temp file of a killed writer: not a row yet
            continue
        key = (row.get("checkpoint"), row.get("weights"), row.get("dataset"), row.get("probe"))
        if key not in latest or written > latest[key][0]:
            latest[key] = (written, row)
    rows = [row for _, row in latest.values()]
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
        units = {r.get("step_unit") or "step" for r in sub if r.get("step") is not None}
        written.append(_curves(plt, sub, ds, "step", " / ".join(sorted(units)) or "step",
                               out / f"{_safe(ds)}_vs_step.png"))
        trained = [r for r in sub if r.get("pretrain_flops") is not None]
        if trained:
            left_out = sorted({r["checkpoint"] for r in sub if r.get("pretrain_flops") is None})
            note = (f"left out, no pretraining FLOPs recorded: {', '.join(left_out)}" if left_out else "")
            written.append(_curves(plt, trained, ds, "pretrain_flops", "pretraining FLOPs (log)",
                                   out / f"{_safe(ds)}_vs_pretrain_flops.png", note=note))

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


def curve_data(rows: list[dict], x: str) -> dict[str, dict]:
    """What a curves plot draws, per probe: `runs` {run: [(x, metric), ...] sorted}, `init` {run: metric
    at x == 0} (with x = "pretrain_flops": the initialisation, off a log axis) and `flat` [(checkpoint,
    metric)] for rows without x (registry baselines)."""
    logx = x == "pretrain_flops"
    out: dict[str, dict] = {}
    for probe in sorted({r["probe"] for r in rows}):
        pr = [r for r in rows if r["probe"] == probe]
        runs, init = {}, {}
        for run in sorted({r["run"] for r in pr}):
            pts = sorted((r[x], r["metric"]) for r in pr if r["run"] == run and r.get(x) is not None
                         and not (logx and r[x] <= 0))
            if pts:
                runs[run] = pts
            at_zero = [r["metric"] for r in pr if logx and r["run"] == run and r.get(x) == 0]
            if at_zero:  # the run's initialisation (0 pretraining FLOPs): no point on a log axis
                init[run] = at_zero[-1]
        out[probe] = {"runs": runs, "init": init,
                      "flat": [(r["checkpoint"], r["metric"]) for r in pr if r.get(x) is None]}
    return out


def _curves(plt, rows: list[dict], ds: str, x: str, xlabel: str, path: Path, note: str = "") -> Path:
    """One panel per probe, test top-1 against `x` ("step", or "pretrain_flops" on a log axis), one line
    per run (`curve_data`): rows without x are grey dashed lines, a run's initialisation (0 FLOPs) a
    dotted line of the run's colour."""
    from matplotlib.ticker import LogLocator

    data = curve_data(rows, x)
    cols = min(3, len(data))
    nrows = -(-len(data) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 3.6 * nrows + (0.4 if note else 0)), squeeze=False)
    logx = x == "pretrain_flops"
    for ax, (probe, d) in zip(axes.flat, data.items()):
        for run in sorted(set(d["runs"]) | set(d["init"])):
            color = None
            if run in d["runs"]:
                pts = d["runs"][run]
                (line,) = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=run)
                color = line.get_color()
            if run in d["init"]:
                ax.axhline(d["init"][run], linestyle=":", linewidth=1.2, color=color or "gray",
                           label=f"{run} at 0 FLOPs (initialisation)")
        for label, metric in d["flat"]:
            ax.axhline(metric, linestyle="--", linewidth=1, color="gray", label=f"{label} (no step)")
        if logx:
            ax.set_xscale("log")
            # minor ticks at 2 and 5 times each power of ten: labelled within a decade, never crowded
            ax.xaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
        ax.set_title(f"{ds} - {probe}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test top-1 (%)")
        ax.grid(alpha=0.3, which="both" if logx else "major")
        ax.legend(fontsize=7, loc="best")
    for ax in list(axes.flat)[len(data):]:
        ax.axis("off")
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, ha="left", va="bottom", wrap=True)
        fig.tight_layout(rect=(0, 0.08 if nrows == 1 else 0.04, 1, 1))
    else:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
