"""The results table: rows merged into results.json / results.csv in one order, plots redrawn only on change."""

import csv
import json

from vidcache.evaluate.report import ROW_FIELDS, collect_rows, rows_table, write_results


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
