"""The one benchmark result format (benchmarks/common.py) and the summary table that reads it."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.__main__ import summary  # noqa: E402
from benchmarks.common import FORMAT, Report, load, unit_of, validate  # noqa: E402

SCRIPTS = sorted(ROOT.glob("benchmarks/bench_*.py")) + [ROOT / "benchmarks/gpu_check.py",
                                                         ROOT / "benchmarks/scale_table.py"]


def _doc(rows, quick=False, bench="codec"):
    return {"format": FORMAT, "bench": bench, "config": {},
            "run": {"quick": quick, "date": "2026-12-01T00:00:00Z", "machine": {"cores": 2}, "torch": "2.6"},
            "rows": [dict(zip(("name", "value", "unit", "target", "met"), r)) for r in rows]}


def test_report_rows_targets_and_file(tmp_path, capsys):
    rep = Report("codec", {"quick": True, "k": [64]})
    rep.figure("encode_s", 1.5)
    rep.figure("encode_ratio", 0.54, unit="x")
    rep.figure("psnr_p10_k64", 21.0)
    rep.figure("selected", "lr=0.001")
    assert rep.target("encode_ratio", 0.54, ">=", 0.8) is False  # onto the figure of that name: one row
    assert rep.target("load_ratio", 0.6, ">=", 0.5, unit="x", note="np.load") is True
    assert rep.target("best_psnr_at_150x", None, ">=", 25.75, unit="dB") is False  # not measured: not met
    doc = rep.finish(tmp_path / "r.json")
    out = capsys.readouterr().out
    assert "encode_ratio: 0.54 x\n" in out and "encode_ratio: 0.54 (target >= 0.8) MISSED" in out
    assert "load_ratio: 0.6 (target >= 0.5) ok" in out
    assert json.loads((tmp_path / "r.json").read_text()) == doc == load(tmp_path / "r.json")
    assert doc["format"] == FORMAT and doc["bench"] == "codec" and doc["run"]["quick"] is True
    assert doc["run"]["machine"]["cores"] == os.cpu_count() and re.match(r"\d{4}-\d\d-\d\dT", doc["run"]["date"])
    assert doc["config"] == {"quick": True, "k": [64]}
    assert [(r["name"], r["value"], r["unit"], r["target"], r["met"]) for r in doc["rows"]] == [
        ("encode_s", 1.5, "s", None, None),
        ("encode_ratio", 0.54, "x", ">= 0.8", False),
        ("psnr_p10_k64", 21.0, "dB", None, None),
        ("selected", "lr=0.001", "", None, None),
        ("load_ratio", 0.6, "x", ">= 0.5", True),
        ("best_psnr_at_150x", None, "dB", ">= 25.75", False)]
    assert doc["rows"][4]["note"] == "np.load"
    with pytest.raises(ValueError, match="op must be"):
        rep.target("x", 1.0, ">", 0)


def test_quick_runs_do_not_overwrite_full_results():
    from benchmarks.common import RESULTS, result_path

    assert result_path("bench_store", quick=False) == RESULTS / "bench_store.json"
    assert result_path("bench_store", quick=True) == RESULTS / "bench_store_quick.json"


@pytest.mark.parametrize("name,unit", [("tiny_end_to_end_clips_per_s", "clips/s"), ("write_MB_per_s", "MB/s"),
                                       ("learning_pretrain_seconds", "s"), ("knn_faiss_s", "s"),
                                       ("propagation_cache_fps", "frames/s"), ("kmeans_k16_heldout_psnr", "dB"),
                                       ("linear_test_top1", "%"), ("gemm_gflops", "GFLOP/s"), ("rows", ""),
                                       ("speedup_quick_sizes", "")])
def test_units_read_off_names(name, unit):
    assert unit_of(name) == unit


def test_validate_names_every_problem():
    good = _doc([("a", 1.0, "x", ">= 0.5", True), ("b", None, "", None, None)])
    assert validate(good) == []
    bad = _doc([("a", 1.0, "x", ">= 0.5", False),  # wrong verdict
                ("b", 1.0, "", "at least 3", False),  # target not '>= B'
                ("a", 2.0, "", None, True),  # repeated, met without target
                ("c", True, 3, None, None)])  # bool value, unit not a string
    bad["run"].pop("torch")
    bad["format"] = "old"
    errs = validate(bad)
    assert any("format is 'old'" in e for e in errs) and any("run.torch" in e for e in errs)
    assert any("row 'a': met is False but 1.0 >= 0.5 is True" in e for e in errs)
    assert any("target 'at least 3'" in e for e in errs)
    assert any("'a': appears twice" in e for e in errs) and any("'a': met without a target" in e for e in errs)
    assert any("'c': value must be" in e for e in errs) and any("'c': unit must be" in e for e in errs)
    assert validate({"figures": {}, "targets": {}}) != [] and validate([]) == ["not a JSON object"]


def test_summary_table_on_a_fixture_results_dir(tmp_path):
    (tmp_path / "bench_codec_quick.json").write_text(json.dumps(_doc(
        [("encode_ratio", 0.5412, "x", ">= 0.8", False), ("psnr_p8_k64", 21.23456, "dB", None, None),
         ("best_psnr_at_150x", None, "dB", ">= 25.75", False)], quick=True)))
    (tmp_path / "bench_store.json").write_text(json.dumps(_doc(
        [("load_ratio", 0.5657, "x", ">= 0.5", True), ("note", "text", "", None, None)], bench="store")))
    (tmp_path / "bench_old.json").write_text(json.dumps({"figures": {"a": 1}, "targets": {"a": ">= 0.8"}}))
    expected = """\
| result            | mode  | figure                      | value        | target   | verdict |
|-------------------|-------|-----------------------------|--------------|----------|---------|
| bench_codec_quick | quick | encode_ratio                | 0.5412 x     | >= 0.8   | MISSED  |
| bench_codec_quick | quick | best_psnr_at_150x           | not measured | >= 25.75 | MISSED  |
| bench_codec_quick | quick | (1 figure without a target) |              |          |         |
| bench_store       | full  | load_ratio                  | 0.5657 x     | >= 0.5   | ok      |
| bench_store       | full  | (1 figure without a target) |              |          |         |
skipped bench_old.json: not in the vidcache-bench/1 format: format is None, expected 'vidcache-bench/1'; \
bench: missing (the script's area); run: missing"""
    assert summary(tmp_path) == expected
    every = summary(tmp_path, all_rows=True)
    assert "| psnr_p8_k64 " in every and "21.23 dB" in every and "| note " in every and "without a target" not in every


def test_summary_command_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    (tmp_path / "bench_store.json").write_text(json.dumps(_doc([("load_ratio", 0.4, "x", ">= 0.5", False)])))
    r = subprocess.run([sys.executable, "-m", "benchmarks", "--summary", str(tmp_path)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "| load_ratio | 0.4 x" in re.sub(r" +", " ", r.stdout) and "MISSED" in r.stdout
    r = subprocess.run([sys.executable, "-m", "benchmarks", "--summary", str(tmp_path / "nope")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no such folder" in r.stderr and "Traceback" not in r.stderr


def test_every_committed_result_is_in_the_format():
    files = sorted((ROOT / "benchmarks" / "results").glob("*.json"))
    assert files
    for path in files:
        assert validate(json.loads(path.read_text())) == [], path.name


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_every_script_writes_through_the_report(script):
    """Each script records its rows with Report and writes them with Report.finish (which validates);
    none writes a result JSON of its own."""
    src = script.read_text()
    assert "Report(" in src and ".finish(" in src, script.name
    assert "json.dumps" not in src, script.name


@pytest.mark.parametrize("script", SCRIPTS + [ROOT / "benchmarks/real_footage.py", ROOT / "benchmarks/__main__.py"],
                         ids=lambda p: p.stem)
def test_every_benchmark_module_imports(script):
    """A benchmark that no longer imports (a helper moved away from under it) fails here, not on the
    day someone runs it."""
    import importlib

    assert importlib.import_module(f"benchmarks.{script.stem}").__name__ == f"benchmarks.{script.stem}"


def test_a_quick_bench_run_writes_valid_rows(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    out = tmp_path / "store.json"
    cmd = [sys.executable, "-m", "benchmarks.bench_store", "--quick", "--videos", "256", "--out", str(out)]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = load(out)
    assert doc["bench"] == "store" and doc["run"]["quick"] is True and doc["config"]["videos"] == 256
    assert doc["run"]["command"] == f"python -m benchmarks.bench_store --quick --videos 256 --out {out.name}"
    rows = {row["name"]: row for row in doc["rows"]}
    assert rows["load_ratio"]["target"] == ">= 0.5" and rows["load_ratio"]["unit"] == "x"
    assert rows["write_MB_per_s"]["value"] > 0 and rows["write_MB_per_s"]["unit"] == "MB/s"
