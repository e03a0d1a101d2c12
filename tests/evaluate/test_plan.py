"""Plan files: every problem at once with its line, types, cross-field checks, the flags form."""

import pytest

from vidcache.errors import ConfigError
from vidcache.evaluate.plan import load_plan, parse_plan


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


def test_section_and_name_problems_come_together(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,split\n")
    ds = {"name": "a", "manifest": str(manifest)}
    with pytest.raises(ConfigError) as err:
        parse_plan({"checkpoints": [{"backbone": "tiny", "path": "x.pt"}], "datasets": [ds, dict(ds)],
                    "probes": [{"type": "knn", "name": "p"}, {"type": "linear", "name": "p"}], "extra": {}})
    assert sorted(err.value.problems) == sorted([
        "extra: unknown section (known: checkpoints, datasets, probes, run)",
        "checkpoints[0].path: give exactly one of path (a file or glob) or backbone (a registry name)",
        "checkpoints[0].path: no such file: x.pt",
        "datasets[1].name: dataset name 'a' is used twice",
        "probes[1].name: probe name 'p' is used twice; give each probe a distinct name"])


def test_empty_missing_and_unparsable_plan_files(tmp_path):
    (tmp_path / "empty.toml").write_text("")
    with pytest.raises(ConfigError) as err:
        load_plan(tmp_path / "empty.toml")
    assert err.value.problems == [f"{s}: at least one [[{s}]] entry is needed"
                                  for s in ("checkpoints", "datasets", "probes")]
    with pytest.raises(ConfigError) as err:
        load_plan(tmp_path / "nope.toml")
    assert err.value.problems == [f"no such plan file: {tmp_path / 'nope.toml'}"]
    (tmp_path / "bad.toml").write_text("[run\nworkers = 1\n")
    with pytest.raises(ConfigError) as err:
        load_plan(tmp_path / "bad.toml")
    [problem] = err.value.problems
    assert problem.startswith(f"{tmp_path / 'bad.toml'}: not valid TOML: ") and "line 1" in problem


def test_flags_form_builds_the_plan_a_file_would(tmp_path):
    from vidcache.evaluate.plan import plan_from_flags

    manifest = tmp_path / "corpus" / "manifest.csv"
    manifest.parent.mkdir()
    manifest.write_text("path,label,split\n")
    plan = plan_from_flags(["tiny"], str(manifest), ["knn", "linear"])
    [ds] = plan.datasets
    assert (ds.name, ds.manifest, ds.protocol, ds.tokens) == ("corpus", str(manifest), "1x1", "none")
    assert [p.type for p in plan.probes] == ["knn", "linear"]
    assert [c.backbone for c in plan.checkpoints] == ["tiny"]
    with pytest.raises(ConfigError, match="type must be one of"):
        plan_from_flags(["tiny"], str(manifest), ["svm"])
