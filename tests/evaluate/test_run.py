"""run_plan: one decode for many checkpoints, resume without repeats, error rows, content identity."""

import argparse
import json
import shutil
import time
from pathlib import Path

import pytest
import torch

from vidcache.evaluate import run as run_mod
from vidcache.evaluate.run import run_plan
from vidcache.models import create_backbone


def test_kill_midway_resumes_without_repeats_errors_listed(tmp_path, synth_corpus, monkeypatch, save_tiny,
                                                          make_plan):
    manifest, _ = synth_corpus
    run = tmp_path / "run"
    for s in range(2):
        save_tiny(run / f"ckpt_{(s + 1) * 100:06d}.pt", seed=s, step=(s + 1) * 100)
    (run / "ckpt_000300.pt").write_bytes(b"\x00not a checkpoint")  # corrupt
    good = (run / "ckpt_000100.pt").read_bytes()
    (run / "ckpt_000500.pt").write_bytes(good[: len(good) // 2])  # truncated mid-write
    bb = create_backbone("tiny", seed=5, image_size=32)
    torch.save({"target_encoder": bb.vit.state_dict(), "args": argparse.Namespace(lr=1)}, run / "ckpt_000400.pt")
    plan = make_plan(manifest, [{"path": str(run / "ckpt_*.pt"), "format": "auto"}])

    # One decode pass feeds both loadable checkpoints.
    from vidcache.extract import clips as clips_mod

    decodes = []
    real_call = clips_mod.ClipWorker.__call__
    monkeypatch.setattr(clips_mod.ClipWorker, "__call__", lambda self, row, path: (decodes.append(row),
                                                                                   real_call(self, row, path))[1])

    # The first run dies after 3 probes (as if killed); nothing it finished is redone.
    calls, kill_after = [], [3]
    real = run_mod._run_probe

    def counted(probe, cfg, store_url, out):
        if kill_after and len(calls) == kill_after[0]:
            raise KeyboardInterrupt
        calls.append((probe.name, store_url))
        return real(probe, cfg, store_url, out)

    monkeypatch.setattr(run_mod, "_run_probe", counted)
    with pytest.raises(KeyboardInterrupt):
        run_plan(plan, tmp_path / "res")
    assert len(decodes) == 16  # 16 videos decoded once for 2 models, not 32
    assert len(calls) == 3 and not list((tmp_path / "res").glob("probes/*/*.tmp-*"))
    kill_after.clear()
    rows = run_plan(plan, tmp_path / "res")
    # The rerun runs only the missing probe: each (checkpoint, probe) pair ran exactly once.
    assert len(calls) == 4 and len(set(calls)) == 4
    assert len(decodes) == 16  # the stores were complete: no second decode
    keys = [(r["checkpoint"], r["dataset"], r["probe"]) for r in rows]
    assert len(keys) == len(set(keys)) == 5 * 2
    by = {(Path(r["checkpoint"]).name, r["probe"]): r for r in rows}
    assert by[("ckpt_000300.pt", "knn")]["status"] == "error"
    assert "not a PyTorch checkpoint" in by[("ckpt_000300.pt", "knn")]["error"]
    assert "cannot read checkpoint" in by[("ckpt_000500.pt", "linear")]["error"]
    assert "--trust-checkpoint" in by[("ckpt_000400.pt", "linear")]["error"]
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 4 and {r["step"] for r in ok} == {100, 200}
    assert all(r["step_source"] == "metadata" and r["flops_per_clip"] > 0 for r in ok)
    assert all(0 <= r["test_top1"] <= 100 and r["selected"] for r in ok)
    csv_lines = (tmp_path / "res" / "results.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 1 + 10
    assert (tmp_path / "res" / "plots" / "synth_vs_step.png").stat().st_size > 10_000
    assert (tmp_path / "res" / "plots" / "accuracy_vs_flops.png").is_file()

    # A third run with everything cached runs no probe and builds no model that loaded before.
    def no_reload(ref, fmt):
        if Path(ref.path).name in ("ckpt_000100.pt", "ckpt_000200.pt"):
            raise AssertionError(f"{ref.path} was loaded again")
        return real_load(ref, fmt)

    real_load = run_mod.load_backbone
    monkeypatch.setattr(run_mod, "load_backbone", no_reload)
    t = time.perf_counter()
    again = run_plan(plan, tmp_path / "res")
    assert time.perf_counter() - t < 3.0
    assert len(calls) == 4 and all(r["cached"] for r in again if r["status"] == "ok")
    assert [r["metric"] for r in again] == [r["metric"] for r in rows]


def test_same_file_name_different_weights_never_share(tmp_path, synth_corpus, count_probes, save_tiny, make_plan,
                                                      probes):
    manifest, _ = synth_corpus
    a = save_tiny(tmp_path / "a" / "ckpt_000100.pt", seed=1, step=100)
    b = save_tiny(tmp_path / "b" / "ckpt_000100.pt", seed=2, step=100)
    plan = make_plan(manifest, [{"path": str(a)}, {"path": str(b)}], probes=probes[:1])
    rows = run_plan(plan, tmp_path / "res")
    assert len(rows) == 2 and len({r["store_hash"] for r in rows}) == 2 and len({r["weights"] for r in rows}) == 2
    assert len(list((tmp_path / "res" / "stores" / "synth").glob("*.zarr"))) == 2
    assert len(count_probes) == 2
    # The same path overwritten with other weights (same size, same name): a new store, a new row.
    save_tiny(a, seed=3, step=100)
    rows = run_plan(plan, tmp_path / "res")
    assert len(count_probes) == 3 and len({r["store_hash"] for r in rows}) == 3
    assert sum(Path(r["checkpoint"]) == a for r in rows) == 2
    # A copy of a file elsewhere (same bytes, same name) reuses its store and results.
    shutil.copy(b, tmp_path / "c.pt")
    (tmp_path / "c").mkdir()
    shutil.copy(b, tmp_path / "c" / "ckpt_000100.pt")
    rows = run_plan(make_plan(manifest, [{"path": str(tmp_path / "c" / "ckpt_000100.pt")}], probes=probes[:1]),
                    tmp_path / "res")
    assert len(count_probes) == 3


def test_a_probe_rerun_with_other_settings_supersedes_its_row(tmp_path, synth_corpus, count_probes, save_tiny,
                                                                make_plan, probes):
    from vidcache.evaluate.report import collect_rows

    manifest, _ = synth_corpus
    ckpt = save_tiny(tmp_path / "ckpt_000100.pt", seed=1, step=100)
    first = run_plan(make_plan(manifest, [{"path": str(ckpt)}], probes=probes[1:]), tmp_path / "res")
    other = [{**probes[1], "epochs": 3}]
    second = run_plan(make_plan(manifest, [{"path": str(ckpt)}], probes=other), tmp_path / "res")
    assert len(count_probes) == 2 and first[0]["probe_hash"] != second[0]["probe_hash"]
    table = json.loads((tmp_path / "res" / "results.json").read_text())["rows"]
    assert [r["probe_hash"] for r in table] == [second[0]["probe_hash"]]  # one row: the newest settings
    # Going back to the first settings is a cached rerun, and its row is the current one again.
    back = run_plan(make_plan(manifest, [{"path": str(ckpt)}], probes=probes[1:]), tmp_path / "res")
    assert len(count_probes) == 2 and back[0]["cached"]
    assert [r["probe_hash"] for r in collect_rows(tmp_path / "res")] == [first[0]["probe_hash"]]
