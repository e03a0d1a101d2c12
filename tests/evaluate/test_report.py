"""The results table: rows merged into results.json / results.csv in one order, plots redrawn only on change,
accuracy against pretraining FLOPs drawn as the rows and checkpoints say."""

import csv
import json

import pytest
from matplotlib.figure import Figure

from vidcache.evaluate.report import ROW_FIELDS, collect_rows, curve_data, make_plots, rows_table, write_results
from vidcache.evaluate.run import run_plan


def _row(run, step, probe, metric, **extra):
    return {"checkpoint": f"{run}/ckpt_{step}.pt", "run": run, "step": step, "step_unit": "step",
            "dataset": "synth", "probe": probe, "status": "ok", "metric": metric, "test_top1": metric,
            "flops_per_clip": 2e9, "report": "test", **extra}


def _write(results, rows):
    (results / "rows").mkdir(parents=True, exist_ok=True)
    for i, r in enumerate(rows):
        (results / "rows" / f"{i:03d}.json").write_text(json.dumps(r))


def test_rows_merge_sorted_into_json_and_csv_torn_files_skipped(tmp_path):
    rows = [_row("b", 200, "linear", 40.0), _row("a", 300, "knn", 30.0), _row("a", 100, "knn", 10.0),
            {**_row("a", 200, "knn", None), "status": "error", "error": "cannot read checkpoint"},
            {**_row("hub", None, "knn", 55.0), "checkpoint": "tiny"}]
    _write(tmp_path, rows)
    (tmp_path / "rows" / "999.json").write_text('{"checkpoint": ')  # a killed writer's half row
    merged = write_results(tmp_path, plots=False)
    # dataset, probe, run, then steps (no-step rows last in their run), then checkpoint
    assert [(r["probe"], r["run"], r["step"]) for r in merged] == [
        ("knn", "a", 100), ("knn", "a", 200), ("knn", "a", 300), ("knn", "hub", None), ("linear", "b", 200)]
    assert collect_rows(tmp_path) == merged
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["fields"] == ROW_FIELDS and saved["rows"] == merged
    with open(tmp_path / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ROW_FIELDS and len(table) == 5
    assert table[1]["status"] == "error" and table[1]["error"] == "cannot read checkpoint"
    assert table[3]["step"] == "" and table[3]["checkpoint"] == "tiny"


def test_plots_are_redrawn_only_when_the_rows_change(tmp_path):
    _write(tmp_path, [_row("a", 100, "knn", 10.0), _row("a", 200, "knn", 20.0)])
    write_results(tmp_path)
    plots = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "plots").glob("*.png")}
    assert set(plots) == {"synth_vs_step.png", "accuracy_vs_flops.png"}
    # a rerun with only timing fields changed: same table, the plots stay as drawn
    _write(tmp_path, [_row("a", 100, "knn", 10.0, probe_s=9.0, cached=True), _row("a", 200, "knn", 20.0)])
    write_results(tmp_path)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "plots").glob("*.png")} == plots
    _write(tmp_path, [_row("a", 100, "knn", 10.0), _row("a", 200, "knn", 25.0)])
    write_results(tmp_path)
    assert (tmp_path / "plots" / "synth_vs_step.png").stat().st_mtime_ns != plots["synth_vs_step.png"]


def test_table_says_the_protocol_and_the_error(tmp_path):
    from rich.console import Console

    rows = [_row("a", 100, "linear", 42.25, report="best-val", val_top1=50.0),
            {**_row("a", 200, "linear", None), "status": "error", "error": "not a PyTorch checkpoint"}]
    console = Console(record=True, width=200)
    console.print(rows_table(rows))
    text = console.export_text()
    assert "42.2" in text and "best-val" in text and "50.0" in text and "2" in text
    assert "error: not a PyTorch checkpoint" in text


@pytest.fixture
def drawn(monkeypatch):
    """Every figure saved: {file name: [(title, xscale, [(label, xs, ys), ...]) per panel], "_text": [...]}."""
    figures = {}
    real = Figure.savefig

    def record(fig, path, *a, **kw):
        panels = [(ax.get_title(), ax.get_xscale(),
                   [(ln.get_label(), list(ln.get_xdata()), list(ln.get_ydata())) for ln in ax.get_lines()])
                  for ax in fig.axes if ax.get_title()]
        figures[str(path).rsplit("/", 1)[-1]] = panels
        figures.setdefault("_text", {})[str(path).rsplit("/", 1)[-1]] = [t.get_text() for t in fig.texts]
        return real(fig, path, *a, **kw)

    monkeypatch.setattr(Figure, "savefig", record)
    return figures


def test_accuracy_against_pretraining_flops_one_line_per_run(tmp_path, synth_corpus, drawn, save_tiny, make_plan):
    manifest, _ = synth_corpus
    flops = {0: 0, 100: 4 * 10**12, 200: 9 * 10**12}
    for step, seed in ((0, 0), (100, 1), (200, 2)):
        save_tiny(tmp_path / "run_a" / f"ckpt_{step:06d}.pt", seed, step=step, pretrain_flops=flops[step])
    save_tiny(tmp_path / "run_b" / "ckpt_000050.pt", 3, step=50, pretrain_flops=2 * 10**12)
    save_tiny(tmp_path / "old" / "ckpt_000010.pt", 4, step=10)  # written before FLOPs were recorded
    plan = make_plan(manifest, [{"path": str(tmp_path / "run_a" / "*.pt")}, {"path": str(tmp_path / "run_b" / "*.pt")},
                                {"path": str(tmp_path / "old" / "*.pt")}, {"backbone": "tiny"}],
                     probes=[{"type": "knn", "ks": [3]}])
    rows = run_plan(plan, tmp_path / "res")
    assert {r["status"] for r in rows} == {"ok"}
    by = {(r["run"], r["step"]): r for r in rows}
    assert [by[("run_a", s)]["pretrain_flops"] for s in (0, 100, 200)] == [0, 4 * 10**12, 9 * 10**12]
    assert by[("old", 10)]["pretrain_flops"] is None and by[("tiny", None)]["pretrain_flops"] is None
    saved = json.loads((tmp_path / "res" / "results.json").read_text())
    assert "pretrain_flops" in saved["fields"]

    panels = drawn["synth_vs_pretrain_flops.png"]
    assert (tmp_path / "res" / "plots" / "synth_vs_pretrain_flops.png").stat().st_size > 10_000
    [(title, scale, lines)] = panels
    assert title == "synth - knn"
    assert scale == "log"
    lines = {label: (xs, ys) for label, xs, ys in lines}
    metric = {k: r["metric"] for k, r in by.items()}
    # One line per run through its trained checkpoints (FLOPs > 0), the initialisation a flat line.
    assert lines["run_a"] == ([4 * 10**12, 9 * 10**12], [metric[("run_a", 100)], metric[("run_a", 200)]])
    assert lines["run_b"] == ([2 * 10**12], [metric[("run_b", 50)]])
    assert lines["run_a at 0 FLOPs (initialisation)"][1] == [metric[("run_a", 0)]] * 2
    assert set(lines) == {"run_a", "run_b", "run_a at 0 FLOPs (initialisation)"}
    # Rows without pretraining FLOPs are left out, named in a note.
    note = drawn["_text"]["synth_vs_pretrain_flops.png"]
    assert len(note) == 1 and "left out" in note[0]
    assert str(tmp_path / "old" / "ckpt_000010.pt") in note[0] and "tiny" in note[0]
    # The step plot still shows every run and the registry baseline.
    step_lines = {label for label, _, _ in drawn["synth_vs_step.png"][0][2]}
    assert {"run_a", "run_b", "old", "tiny (no step)"} <= step_lines


def test_no_pretraining_flops_no_plot(tmp_path):
    rows = [{"status": "ok", "metric": 50.0, "dataset": "d", "probe": "knn", "run": "tiny", "checkpoint": "tiny",
             "step": None, "pretrain_flops": None}]
    written = make_plots(rows, tmp_path)
    assert [p.name for p in written] == ["d_vs_step.png"]
    assert curve_data(rows, "pretrain_flops")["knn"] == {"runs": {}, "init": {}, "flat": [("tiny", 50.0)]}
