"""watch: checkpoints copied into a folder while it runs are evaluated once each."""

import threading
import time
from pathlib import Path

import pytest

from vidcache.errors import ConfigError
from vidcache.evaluate.plan import load_plan
from vidcache.evaluate.watch import watch


def test_watch_picks_up_a_copied_checkpoint(tmp_path, synth_corpus, save_tiny, make_plan, probes):
    manifest, _ = synth_corpus
    folder = tmp_path / "train"
    folder.mkdir()
    save_tiny(folder / "ckpt_000100.pt", seed=0, step=100)
    plan = make_plan(manifest, [{"path": str(folder / "ckpt_000100.pt")}], probes=probes[:1])
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


def test_watch_takes_a_plan_of_datasets_and_probes(tmp_path, synth_corpus, save_tiny):
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
