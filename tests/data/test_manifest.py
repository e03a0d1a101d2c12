"""Manifests: each has its own class file, and paths point where they pointed when written."""

from pathlib import Path

import numpy as np

from vidcache.data.manifest import Manifest, classes_path, read_manifest


def _manifest(root, classes, n=6):
    paths = [str(root / "videos" / f"v{i}.mp4") for i in range(n)]
    return Manifest(paths, np.arange(n) % len(classes), ["train"] * n, list(classes))


def test_two_manifests_in_one_folder_keep_their_own_classes(tmp_path):
    a = _manifest(tmp_path, ["bikes", "bunny", "carphone"])
    b = _manifest(tmp_path, ["pan_left", "pan_right"])
    a.write(tmp_path / "appearance.csv")
    b.write(tmp_path / "pans.csv")  # once overwrote the class list the first manifest depends on
    assert classes_path(tmp_path / "appearance.csv").name == "appearance.classes.txt"
    assert read_manifest(tmp_path / "appearance.csv").classes == ["bikes", "bunny", "carphone"]
    assert read_manifest(tmp_path / "pans.csv").classes == ["pan_left", "pan_right"]
    assert not (tmp_path / "classes.txt").exists()
    np.testing.assert_array_equal(read_manifest(tmp_path / "appearance.csv").labels, a.labels)


def test_a_plain_classes_txt_is_still_read(tmp_path):
    """The layout of the synthetic corpus and of manifests written before: `classes.txt` beside it."""
    (tmp_path / "manifest.csv").write_text("path,label,split\na.mp4,zebra,train\nb.mp4,apple,test\n")
    (tmp_path / "classes.txt").write_text("zebra\napple\n")
    m = read_manifest(tmp_path / "manifest.csv")
    assert m.classes == ["zebra", "apple"] and m.labels.tolist() == [0, 1]
    # A manifest written into that folder leaves the shared file alone.
    _manifest(tmp_path, ["x", "y"]).write(tmp_path / "other.csv")
    assert (tmp_path / "classes.txt").read_text() == "zebra\napple\n"
    assert read_manifest(tmp_path / "manifest.csv").classes == ["zebra", "apple"]


def test_paths_relative_to_another_folder_survive_the_round_trip(tmp_path, monkeypatch):
    """Paths given relative to the current folder are written relative to the manifest's folder."""
    (tmp_path / "data" / "videos").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    m = Manifest(["data/videos/a.mp4"], np.array([0]), ["train"], ["c"])
    m.write(tmp_path / "lists" / "m.csv")
    back = read_manifest(tmp_path / "lists" / "m.csv")
    assert Path(back.paths[0]).resolve() == (tmp_path / "data" / "videos" / "a.mp4").resolve()
