"""Re-evaluation plans name dense probes: validation of their datasets, rows with J&F / mIoU."""

import json

import pytest

from vidcache.data.davis import manifest_from_davis
from vidcache.errors import ConfigError
from vidcache.evaluate.plan import parse_plan


def _plan(tmp_path, protocol, tokens, probes):
    return {"run": {"workers": 0, "batch_size": 8, "device": "cpu"}, "checkpoints": [{"backbone": "tiny_frame", "options": {"patch_size": 4}}],
            "datasets": [{"name": "d", "manifest": str(tmp_path / "m.csv"), "protocol": protocol, "tokens": tokens}],
            "probes": probes}


def test_dense_probe_needs_a_frame_protocol(tmp_path):
    (tmp_path / "m.csv").write_text("path,label,split\nx.mp4,,train\n")
    with pytest.raises(ConfigError, match='protocol = "frames:all"'):
        parse_plan(_plan(tmp_path, "1x1", "none", [{"type": "propagate"}]))
    with pytest.raises(ConfigError, match="topk"):
        parse_plan(_plan(tmp_path, "frames:all", "full", [{"type": "propagate", "topk": 0}]))
    plan = parse_plan(_plan(tmp_path, "frames:all", "full", [{"type": "propagate", "preset": "rvm"},
                                                             {"type": "retrieval", "k": 5}]))
    cfg = plan.probe_config(plan.probes[1], plan.datasets[0])
    assert (cfg.train_split, cfg.split, cfg.k) == ("train", "val", 5)


def test_eval_run_reports_dense_metrics(tmp_path, make_davis):
    from vidcache.evaluate import run_plan

    root = make_davis(tmp_path / "davis", seqs=(("a", "train", 4), ("b", "val", 5)))
    manifest_from_davis(root).write(tmp_path / "m.csv")
    plan = parse_plan(_plan(tmp_path, "frames:all", "full", [{"type": "propagate", "radius": 2},
                                                             {"type": "retrieval", "k": 5}]))
    rows = run_plan(plan, tmp_path / "out", live=False)
    by = {r["probe"]: r for r in rows}
    assert by["propagate"]["status"] == "ok" and by["retrieval"]["status"] == "ok", rows
    res = json.loads(next((tmp_path / "out").rglob("propagate-*/results.json")).read_text())
    assert by["propagate"]["metric"] == res["JF_mean"] and 0 <= res["JF_mean"] <= 1
    again = {r["probe"]: r for r in run_plan(plan, tmp_path / "out", live=False)}
    assert again["propagate"]["cached"] and again["propagate"]["metric"] == by["propagate"]["metric"]
