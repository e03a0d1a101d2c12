"""The command line starts at once: `--help`, `--version` and every sub-command's `--help` import no torch.

Config dataclasses live in torch-free modules (`*/config.py`) and heavy libraries are imported inside
the commands, so listing options never loads torch. One subprocess (a fresh interpreter) walks every
command of the typer app, asks for its help and checks `sys.modules` after each.
"""

import json
import subprocess
import sys

import typer

import vidcache
from vidcache.cli import app

_WALK = r"""
import contextlib, io, json, sys
import typer
from vidcache.cli import app, main

def paths(cmd, prefix=()):
    yield prefix
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        yield from paths(sub, prefix + (name,))

report = {"after_import": sorted(m for m in ("torch", "zarr", "faiss", "decord", "av") if m in sys.modules),
          "runs": []}
for argv in [["--version"]] + [list(p) + ["--help"] for p in paths(typer.main.get_command(app))]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            main(argv)
            code = 0
        except SystemExit as e:
            code = e.code or 0
    report["runs"].append({"argv": argv, "code": code, "torch": "torch" in sys.modules,
                           "out": buf.getvalue()})
report["slow_to_import"] = sorted(m for m in ("pydantic", "typer.rich_utils", "rich.markdown", "rich.console")
                                  if m in sys.modules)
print(json.dumps(report))
"""


def _command_paths(cmd, prefix=()):
    yield prefix
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        yield from _command_paths(sub, prefix + (name,))


def test_every_help_and_version_import_no_torch():
    r = subprocess.run([sys.executable, "-c", _WALK], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["after_import"] == [], f"importing vidcache.cli loaded {report['after_import']}"
    runs = report["runs"]
    expected = [["--version"]] + [list(p) + ["--help"] for p in _command_paths(typer.main.get_command(app))]
    assert [run["argv"] for run in runs] == expected
    # the walk reached the leaves, not only the groups
    assert ["extract", "clips", "--help"] in expected and ["probe", "linear", "--help"] in expected
    assert ["pretrain", "vjepa", "--help"] in expected and ["scale", "eval", "--help"] in expected
    assert runs[0]["out"].strip() == f"vidcache {vidcache.__version__}"
    for run in runs:
        assert run["code"] == 0, run
        assert not run["torch"], f"`vidcache {' '.join(run['argv'])}` imported torch"
    for run in runs[1:]:
        assert "Usage: vidcache " + " ".join(run["argv"][:-1]) in " ".join(run["out"].split()), run["argv"]
    # typer's rich help layout (rich's markdown, syntax, traceback) and its pydantic coercion of absent
    # options are start-up time that no help needs (benchmarks/bench_startup.py measures it)
    assert report["slow_to_import"] == []


def test_generated_extract_options_follow_their_configs():
    """`extract clips` / `extract codes` options are the config fields (plus the command's own)."""
    import dataclasses

    from vidcache.extract.config import ClipExtractConfig, CodeExtractConfig

    group = typer.main.get_command(app).commands["extract"]
    for name, cls, own in (("clips", ClipExtractConfig, {"manifest", "output", "backbone", "backbone_option",
                                                          "overwrite", "storage_option"}),
                           ("codes", CodeExtractConfig, {"manifest", "output", "overwrite", "storage_option"})):
        params = {p.name for p in group.commands[name].params}
        fields = {f.name for f in dataclasses.fields(cls)} - {"backbone", "backbone_options"}
        assert params == fields | own, (name, params ^ (fields | own))


def test_a_group_without_a_command_prints_its_help():
    for argv, commands in (([], ("data", "extract", "probe", "eval")), (["probe"], ("linear", "knn", "attentive"))):
        r = subprocess.run([sys.executable, "-m", "vidcache", *argv], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert " ".join(["Usage: vidcache", *argv]) in r.stdout, r.stdout
        listed = {line.split()[0] for line in r.stdout.split("Commands:")[1].splitlines() if line.strip()}
        assert set(commands) <= listed, listed
