"""Batch re-evaluation: plan validation, resume without repeats, content identity, errors, cache, watch, prune."""

import argparse
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vidcache.errors import ConfigError
from vidcache.evaluate import checkpoints as ckpt_mod
from vidcache.evaluate import run as run_mod
from vidcache.evaluate.checkpoints import step_from_name
from vidcache.evaluate.plan import load_plan, parse_plan
from vidcache.evaluate.prune import prune
from vidcache.evaluate.run import run_plan
from vidcache.evaluate.watch import watch
from vidcache.models import create_backbone
from vidcache.models.checkpoint import make_checkpoint, save_checkpoint_atomic

PROBES = [{"type": "knn", "ks": [3]},
          {"type": "linear", "lrs": [1e-2], "wds": [1e-3], "epochs": 2}]


def save_tiny(path, seed, step=None, **extra):
    """A vidcache-format checkpoint of a `tiny` (32 px) model; weights differ by seed."""
    bb = create_backbone("tiny", seed=seed, image_size=32)
    ckpt = make_checkpoint(bb.vit.config, bb.vit.state_dict(), step=step or 0,
                           preprocess={"mean": list(bb.mean), "std": list(bb.std), "frame_stride": 2}, **extra)
    if step is None:
        del ckpt["step"]
    return save_checkpoint_atomic(ckpt, path)


def make_plan(manifest, checkpoints, probes=PROBES, **run):
    return parse_plan({"run": {"workers": 0, "batch_size": 8, **run}, "checkpoints": checkpoints,
                       "datasets": [{"name": "synth", "manifest": str(manifest), "protocol": "1x1"}],
                       "probes": [dict(p) for p in probes]})


@pytest.fixture
def count_probes(monkeypatch):
    calls = []
    real = run_mod._run_probe

    def counted(probe, cfg, store_url, out):
        calls.append((probe.name, store_url))
        return real(probe, cfg, store_url, out)

    monkeypatch.setattr(run_mod, "_run_probe", counted)
    return calls


def test_step_from_file_names():
    assert step_from_name("runs/a/ckpt_000500.pt") == (500, "step")
    assert step_from_name("step=1200.safetensors") == (1200, "step")
    assert step_from_name("model-iter300.pth") == (300, "step")
    assert step_from_name("epoch_3.pt") == (3, "epoch")
    assert step_from_name("jepa-ep25.pth.tar") == (25, "epoch")
    assert step_from_name("jepa-40.pth.tar") == (40, "step")
    assert step_from_name("vitl16-40.pth.tar") == (None, "")  # two bare numbers: ambiguous
    assert step_from_name("latest.pt") == (None, "")


def test_plan_reports_every_problem_with_its_line(tmp_path, synth_corpus):
    manifest, _ = synth_corpus
    text = f"""
[run]
workers = -1

[[checkpoints]]
path = "missing/ckpt_5.pt"
colour = "red"

[[checkpoints]]
backbone = "tinny"

[[datasets]]
name = "synth"
manifest = "{manifest}"
protocol = "7y"

[[probes]]
type = "linear"
epochs = 0

[[probes]]
type = "attentive"

[[probes]]
type = "svm"
"""
    (tmp_path / "plan.toml").write_text(text)
    with pytest.raises(ConfigError) as err:
        load_plan(tmp_path / "plan.toml")
    problems = err.value.problems
    joined = "\n".join(problems)
    expected = {3: "run.workers", 6: "checkpoints[0].path", 7: "checkpoints[0].colour", 10: "checkpoints[1].backbone",
                15: "datasets[0].protocol", 19: "probes[0].epochs", 12: "datasets[0].tokens", 25: "probes[2].type"}
    for line, where in expected.items():
        assert any(p.startswith(f"line {line}: {where}") for p in problems), (line, where, joined)
    assert "tokens" in joined and "attentive" in joined  # the attentive probe needs stored tokens
    assert "did you mean 'tiny'" in joined
    assert len(problems) >= 9


def test_kill_midway_resumes_without_repeats_errors_listed(tmp_path, synth_corpus, monkeypatch):
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


def test_same_file_name_different_weights_never_share(tmp_path, synth_corpus, count_probes):
    manifest, _ = synth_corpus
    a = save_tiny(tmp_path / "a" / "ckpt_000100.pt", seed=1, step=100)
    b = save_tiny(tmp_path / "b" / "ckpt_000100.pt", seed=2, step=100)
    plan = make_plan(manifest, [{"path": str(a)}, {"path": str(b)}], probes=PROBES[:1])
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
    rows = run_plan(make_plan(manifest, [{"path": str(tmp_path / "c" / "ckpt_000100.pt")}], probes=PROBES[:1]),
                    tmp_path / "res")
    assert len(count_probes) == 3


def test_watch_picks_up_a_copied_checkpoint(tmp_path, synth_corpus):
    manifest, _ = synth_corpus
    folder = tmp_path / "train"
    folder.mkdir()
    save_tiny(folder / "ckpt_000100.pt", seed=0, step=100)
    plan = make_plan(manifest, [{"path": str(folder / "ckpt_000100.pt")}], probes=PROBES[:1])
    stop = threading.Event()
    seen = []
    t = threading.Thread(target=watch, args=(folder, plan, tmp_path / "res"),
                         kwargs=dict(poll_s=0.05, stop=stop, on_rows=seen.append), daemon=True)
    t.start()
    deadline = time.time() + 60
    while len(seen) < 1 and time.time() < deadline:
        time.sleep(0.05)
    # A checkpoint written the way trainers do (temp file + rename) while watch runs.
    save_tiny(folder / "ckpt_000200.pt", seed=1, step=200)
    (folder / ".ckpt_000300.pt.tmp-1").write_bytes(b"half")  # a writer's temp file: ignored
    while len(seen) < 2 and time.time() < deadline:
        time.sleep(0.05)
    stop.set()
    t.join(10)
    assert not t.is_alive()
    assert [Path(r[0]["checkpoint"]).name for r in seen] == ["ckpt_000100.pt", "ckpt_000200.pt"]
    from vidcache.evaluate.report import collect_rows

    rows = collect_rows(tmp_path / "res")
    assert [r["step"] for r in rows] == [100, 200] and all(r["status"] == "ok" for r in rows)


def test_prune_lists_then_removes_stores_the_plan_no_longer_needs(tmp_path, synth_corpus):
    manifest, _ = synth_corpus
    a = save_tiny(tmp_path / "ckpt_000100.pt", seed=1, step=100)
    b = save_tiny(tmp_path / "ckpt_000200.pt", seed=2, step=200)
    both = make_plan(manifest, [{"path": str(a)}, {"path": str(b)}], probes=PROBES[:1])
    rows = run_plan(both, tmp_path / "res")
    only_b = make_plan(manifest, [{"path": str(b)}], probes=PROBES[:1])
    store_a = next(r["store"] for r in rows if Path(r["checkpoint"]) == a)
    items = prune(tmp_path / "res", plan=only_b, dry_run=True)
    assert [i.path for i in items] == [store_a] and items[0].bytes > 0 and Path(store_a).exists()
    assert prune(tmp_path / "res", older_than_s=3600) == []  # everything is fresh
    prune(tmp_path / "res", plan=only_b, dry_run=False)
    assert not Path(store_a).exists()
    assert len(list((tmp_path / "res" / "stores" / "synth").glob("*.zarr"))) == 1
    # Its results stay: rerunning the full plan reuses them without re-extracting.
    again = run_plan(both, tmp_path / "res")
    assert all(r["cached"] for r in again) and not Path(store_a).exists()


def test_wrongly_typed_plan_fields_get_line_numbered_problems(tmp_path, synth_corpus):
    manifest, _ = synth_corpus
    (tmp_path / "plan.toml").write_text(f"""[[checkpoints]]
backbone = "tiny"

[[datasets]]
name = "synth"
manifest = "{manifest}"
val_fraction = "x"

[[probes]]
type = "linear"
epochs = "20"
lrs = ["a"]
""")
    with pytest.raises(ConfigError) as err:
        load_plan(tmp_path / "plan.toml")
    assert sorted(err.value.problems) == ["line 11: probes[0].epochs: epochs must be an integer, got '20'",
                                          "line 12: probes[0].lrs: lrs must be a list of numbers, got ['a']",
                                          "line 7: datasets[0].val_fraction: val_fraction must be a number, got 'x'"]


def test_scale_probe_the_protocol_cannot_feed_is_refused_before_work(tmp_path, synth_corpus):
    manifest, _ = synth_corpus
    data = {"checkpoints": [{"backbone": "tiny"}],
            "datasets": [{"name": "synth", "manifest": str(manifest), "protocol": "1x1"}],
            "probes": [{"type": "scale", "train": {"clips_per_set": 2}}]}
    with pytest.raises(ConfigError, match="clips_per_set = 2 and needs 4 clips per video, but protocol '1x1'"):
        parse_plan(data)
    data["datasets"][0]["protocol"] = "uniform:4"
    assert parse_plan(data).probes[0].type == "scale"
    from vidcache.evaluate.plan import plan_from_flags

    with pytest.raises(ConfigError, match="use --protocol random:16:0"):  # the flags form's default 1x1
        plan_from_flags(["tiny"], str(manifest), ["scale"])


def test_watch_takes_a_plan_of_datasets_and_probes(tmp_path, synth_corpus):
    manifest, _ = synth_corpus
    (tmp_path / "plan.toml").write_text(f"""[[datasets]]
name = "synth"
manifest = "{manifest}"
protocol = "1x1"

[[probes]]
type = "knn"
ks = [3]
""")
    with pytest.raises(ConfigError, match="at least one \\[\\[checkpoints\\]\\]"):
        load_plan(tmp_path / "plan.toml")  # `eval run` needs checkpoints
    plan = load_plan(tmp_path / "plan.toml", need_checkpoints=False)
    assert plan.checkpoints == [] and [p.type for p in plan.probes] == ["knn"]
    plan.run.workers, plan.run.batch_size = 0, 8
    folder = tmp_path / "train"
    folder.mkdir()
    save_tiny(folder / "ckpt_000100.pt", seed=0, step=100)
    done = watch(folder, plan, tmp_path / "res", poll_s=0.01, settle_polls=1, max_polls=1)
    assert [Path(p).name for p in done] == ["ckpt_000100.pt"]


@pytest.mark.parametrize("text, seconds", [("30d", 30 * 86400), ("12h", 12 * 3600), ("45m", 2700), ("90s", 90),
                                           ("2w", 14 * 86400), ("1.5", 1.5 * 86400), (" 0d ", 0)])
def test_prune_ages_are_durations(text, seconds):
    from vidcache.evaluate.prune import parse_duration

    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["-1d", "-5", "abc", "30x", "", "inf", "nan"])
def test_prune_refuses_negative_or_malformed_ages(text, tmp_path):
    from vidcache.errors import VidcacheError
    from vidcache.evaluate.prune import parse_duration

    with pytest.raises(VidcacheError, match="--older-than"):
        parse_duration(text)
    with pytest.raises(VidcacheError, match="older_than_s must be >= 0"):
        prune(tmp_path, older_than_s=-1.0)
