"""The CLI through typer's CliRunner and `main`: exit codes and one-line errors."""

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

import vidcache
from vidcache.cache import Store
from vidcache.cli import app, main

runner = CliRunner()


def run_main(capsys, *argv):
    with pytest.raises(SystemExit) as e:
        main(list(map(str, argv)))
    captured = capsys.readouterr()
    return e.value.code, captured.out, captured.err


def test_version():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.strip() == f"vidcache {vidcache.__version__}"


@pytest.mark.parametrize("argv, message", [
    (["cache", "info", "nowhere.zarr"], "not a vidcache store: nowhere.zarr"),
    (["extract", "clips", "missing.csv", "-o", "x.zarr"], "manifest not found: missing.csv"),
    (["extract", "clips", "missing.csv", "-o", "x.zarr", "--protocol", "7y"], "'7y' is not a sampling protocol"),
    (["extract", "clips", "missing.csv", "-o", "x.zarr", "--batch-size", "0", "--tokens", "some"],
     "tokens must be none, full or pool:T,H,W (e.g. pool:2,4,4), got 'some'; batch_size must be >= 1, got 0"),
    (["cache", "export", "nowhere.zarr", "-o", "x.h5", "--format", "csv"], "unknown --format 'csv'"),
    (["extract", "clips", "m.csv", "-o", "x.zarr", "--no-such-flag"], "No such option"),
    (["data", "synth", "out", "--classes", "1", "--size", "15"], "classes must be in 2.."),
])
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(capsys, *argv)
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err  # click's usage errors too


def test_synth_info_verify_export(capsys, tmp_path):
    code, out, _ = run_main(capsys, "data", "synth", tmp_path / "corpus", "--videos", "8", "--classes", "4",
                            "--size", "32", "--frames", "12")
    assert code == 0 and "wrote 8 videos in 4 classes" in out
    assert len(list((tmp_path / "corpus" / "videos").rglob("*.mp4"))) == 8
    code, out, _ = run_main(capsys, "extract", "clips", tmp_path / "corpus" / "manifest.csv", "-o",
                            tmp_path / "s.zarr", "--protocol", "1x1", "--workers", "0")
    assert code == 0 and "8 done, 0 failed, 0 pending" in out
    code, out, _ = run_main(capsys, "cache", "verify", tmp_path / "s.zarr")
    assert code == 0 and out.startswith("ok: 8 done rows checked")
    code, out, _ = run_main(capsys, "cache", "export", tmp_path / "s.zarr", "-o", tmp_path / "s.h5")
    assert code == 0
    with h5py.File(tmp_path / "s.h5") as f:
        np.testing.assert_array_equal(f["clips/emb"][:], Store.open(tmp_path / "s.zarr").group["clips/emb"][:])
    code, out, _ = run_main(capsys, "cache", "info", tmp_path / "s.zarr", "--json")
    assert code == 0 and '"done": 8' in out
    # A done row without data is a verify failure (exit 1).
    store = Store.open(tmp_path / "s.zarr", mode="r+")
    store.group["clips/emb"][3] = 0
    code, out, _ = run_main(capsys, "cache", "verify", tmp_path / "s.zarr")
    assert code == 1 and "without data (rows [3])" in out


def test_data_manifest_from_folders(capsys, tmp_path):
    for cls in ("jump", "run"):
        for i in range(5):
            p = tmp_path / "root" / cls / f"{i}.mp4"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"x")
    code, out, _ = run_main(capsys, "data", "manifest", tmp_path / "root", "-o", tmp_path / "m.csv",
                            "--val-fraction", "0.2", "--test-fraction", "0.2")
    assert code == 0 and "10 videos, 2 classes" in out
    from vidcache.data.manifest import read_manifest

    m = read_manifest(tmp_path / "m.csv")
    assert m.classes == ["jump", "run"] and m.counts() == {"test": 2, "train": 6, "val": 2}


def test_click_usage_errors_are_one_line(capsys):
    code, _, err = run_main(capsys, "scale", "train", "s.zarr", "-o", "r", "--epochs", "abc")
    assert code == 2 and err.strip().splitlines() == [
        "error: Invalid value for '--epochs': Input should be a valid integer, unable to parse string as an "
        "integer (see `vidcache scale train --help`)"]
    code, _, err = run_main(capsys, "probe", "linear")
    assert code == 2 and err.strip() == "error: Missing argument 'store'. (see `vidcache probe linear --help`)"


def test_output_paths_are_checked_before_work(capsys, tmp_path, synth_corpus):
    manifest, _ = synth_corpus
    (tmp_path / "cb").mkdir()
    # A folder where the codebook file goes: refused while parsing, not after training.
    code, _, err = run_main(capsys, "codec", "train", manifest, "-o", tmp_path / "cb", "--k", "8")
    assert code == 2 and "cb is a folder; give the name of a file to write" in err
    assert list((tmp_path / "cb").iterdir()) == [] and not (tmp_path / "cb.tmp").exists()
    (tmp_path / "plain").write_text("x")
    for argv in (["data", "manifest", manifest.parent / "videos", "-o", tmp_path / "plain" / "m.csv"],
                 ["data", "synth", tmp_path / "plain" / "c"],
                 ["extract", "clips", manifest, "-o", tmp_path / "plain" / "s.zarr"],
                 ["eval", "run", "-o", tmp_path / "plain" / "e", "--checkpoint", "tiny", "--manifest", manifest,
                  "--probe", "knn"]):
        code, _, err = run_main(capsys, *argv)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "plain is a file, not a folder" in err, argv
    # Parents are created, as by every other command.
    code, _, _ = run_main(capsys, "extract", "clips", manifest, "-o", tmp_path / "s.zarr", "--protocol", "1x1",
                          "--workers", "0")
    assert code == 0
    code, out, _ = run_main(capsys, "cache", "export", tmp_path / "s.zarr", "-o", tmp_path / "new" / "dir" / "s.h5")
    assert code == 0 and (tmp_path / "new" / "dir" / "s.h5").is_file()


def test_decoder_is_checked_in_codec_commands(capsys, tmp_path, synth_corpus):
    manifest, _ = synth_corpus
    code, _, err = run_main(capsys, "codec", "train", manifest, "-o", tmp_path / "cb.npz", "--decoder", "foo")
    assert code == 2 and "decoder must be one of auto" in err and "got 'foo'" in err and "Traceback" not in err
    code, _, err = run_main(capsys, "codec", "eval", tmp_path / "codes.zarr", "--decoder", "foo")
    assert code == 2 and "decoder must be one of auto" in err and "got 'foo'" in err
    from vidcache.codec.evaluate import evaluate_store
    from vidcache.errors import ConfigError

    with pytest.raises(ConfigError, match="max_videos must be >= 1"):  # not "no done videos"
        evaluate_store(tmp_path / "codes.zarr", max_videos=0)


def test_kinetics_manifest_takes_every_splits_file(capsys, tmp_path):
    rows = {"train": [f"a,id{i},0,10,train" for i in range(6)], "val": [f"b,vd{i},0,10,validate" for i in range(4)]}
    for name, lines in rows.items():
        (tmp_path / f"{name}.csv").write_text("label,youtube_id,time_start,time_end,split\n" + "\n".join(lines) + "\n")
    (tmp_path / "k400").mkdir()
    code, out, _ = run_main(capsys, "data", "manifest", tmp_path / "k400", "-o", tmp_path / "m.csv", "--format",
                            "kinetics", "--splits", tmp_path / "train.csv", "--splits", tmp_path / "val.csv")
    assert code == 0 and "10 videos, 2 classes, splits {'train': 6, 'val': 4}" in out
    code, _, err = run_main(capsys, "data", "manifest", tmp_path / "k400", "-o", tmp_path / "m.csv",
                            "--splits", tmp_path / "train.csv")
    assert code == 2 and "--splits is read by --format ucf101, hmdb51 or kinetics, not folders" in err


def test_prune_takes_durations(capsys, tmp_path):
    (tmp_path / "stores").mkdir()
    code, out, _ = run_main(capsys, "cache", "prune", tmp_path, "--older-than", "30d")
    assert code == 0 and "nothing to prune" in out
    code, _, err = run_main(capsys, "cache", "prune", tmp_path, "--older-than", "-1d")
    assert code == 2 and "must be a finite age >= 0" in err


def test_an_error_is_the_last_line_even_with_io_left_pending(tmp_path):
    """A remote store that fails mid-write leaves asyncio writes pending (zarr over s3fs); at exit
    they must not add "Task was destroyed" or an "Exception ignored" traceback after the one line."""
    import subprocess
    import sys

    code = f"""
import asyncio
from vidcache.cli import main

class Unraisable:
    def __del__(self):
        raise ValueError("raised while being torn down")

async def write_forever():
    await asyncio.sleep(3600)

loop = asyncio.new_event_loop()
pending = loop.create_task(write_forever())
loop.run_until_complete(asyncio.sleep(0))  # the write has started and never finishes
leak = [Unraisable()]
leak.append(leak)  # a cycle: collected, and its __del__ raises, after main has exited
main(["cache", "info", {str(tmp_path / 'missing.zarr')!r}])
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
