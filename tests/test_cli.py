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
    if not err.lstrip().startswith(("Usage", "╭")):  # click's own usage errors carry a usage line
        assert len(err.strip().splitlines()) == 1, err


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
