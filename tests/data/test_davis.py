"""DAVIS-format data: palette masks, frames folders as videos, the DAVIS-2017 importer, masks in manifests."""

import numpy as np
import pytest
from PIL import Image

from vidcache.data.davis import davis_palette, frame_names, manifest_from_davis, read_mask, write_mask
from vidcache.data.manifest import Manifest, read_manifest
from vidcache.errors import DataError
from vidcache.video.decode import DecodeError, open_video


def test_palette_is_pascal_voc():
    p = davis_palette()
    assert p.shape == (256, 3)
    np.testing.assert_array_equal(p[:4], [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]])
    np.testing.assert_array_equal(p[255], [224, 224, 192])


def test_mask_round_trip_is_indexed(tmp_path):
    ids = np.array([[0, 1, 2], [255, 1, 0]], np.uint8)
    path = write_mask(tmp_path / "m.png", ids)
    with Image.open(path) as im:
        assert im.mode == "P"
        np.testing.assert_array_equal(np.asarray(im.getpalette()[:6]), [0, 0, 0, 128, 0, 0])
    np.testing.assert_array_equal(read_mask(path), ids)


def test_rgb_mask_is_refused(tmp_path):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match="indexed"):
        read_mask(tmp_path / "rgb.png")
    with pytest.raises(DataError, match="not found"):
        read_mask(tmp_path / "none.png")


def test_frames_folder_is_a_video(tmp_path, make_davis):
    root = make_davis(tmp_path)
    folder = root / "JPEGImages/480p/bear"
    with open_video(folder) as v:
        assert (v.num_frames, v.height, v.width, v.fps) == (5, 24, 32, 0.0)
        frames = v.get_frames([4, 0, 4])
    assert frames.shape == (3, 24, 32, 3)
    ref = np.asarray(Image.open(folder / "00004.jpg"))
    np.testing.assert_array_equal(frames[0], ref)
    np.testing.assert_array_equal(frames[0], frames[2])
    assert frame_names(str(folder), 5) == [f"{i:05d}" for i in range(5)]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DecodeError, match="without frame images"):
        open_video(tmp_path / "empty")


def test_davis_importer_reads_splits_and_masks(tmp_path, make_davis):
    root = make_davis(tmp_path)
    m = manifest_from_davis(root)
    assert m.splits == ["train", "val"] and m.labels.tolist() == [-1, -1]
    assert m.paths[1].endswith("JPEGImages/480p/cat") and m.masks[1].endswith("Annotations/480p/cat")
    m.write(tmp_path / "manifest.csv")
    back = read_manifest(tmp_path / "manifest.csv")
    assert back.paths == m.paths and back.masks == m.masks and back.splits == m.splits


def test_davis_importer_reports_missing_parts(tmp_path, make_davis):
    with pytest.raises(DataError, match="not a DAVIS tree"):
        manifest_from_davis(tmp_path)
    root = make_davis(tmp_path)
    (root / "ImageSets/2017/val.txt").write_text("cat\nghost\n")
    with pytest.raises(DataError, match="ghost"):
        manifest_from_davis(root)


def test_manifest_without_masks_keeps_three_columns(tmp_path):
    m = Manifest(["a.mp4"], np.array([0]), ["train"], ["x"], masks=[""])
    assert m.masks is None
    m.write(tmp_path / "m.csv")
    assert (tmp_path / "m.csv").read_text().splitlines()[0] == "path,label,split"
    with pytest.raises(DataError, match="masks"):
        Manifest(["a.mp4", "b.mp4"], np.array([0, 0]), ["train", "train"], masks=["x"])


def test_cli_manifest_davis(tmp_path, make_davis):
    from typer.testing import CliRunner

    from vidcache.cli import app

    root = make_davis(tmp_path / "davis")
    res = CliRunner().invoke(app, ["data", "manifest", str(root), "--format", "davis", "-o", str(tmp_path / "m.csv")])
    assert res.exit_code == 0, res.output
    assert read_manifest(tmp_path / "m.csv").masks[0].endswith("Annotations/480p/bear")


def test_cutout_tree_has_moving_masked_objects(tmp_path):
    from vidcache.data.davis import write_cutout_davis

    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 255, (60, 80, 3), dtype=np.uint8), np.full((50, 70, 3), 200, np.uint8)]
    root = write_cutout_davis(tmp_path / "c", photos, sequences=2, frames=5, size=(40, 48), seed=1)
    m = manifest_from_davis(root)
    assert m.splits == ["train", "val"]
    ids0 = read_mask(root / "Annotations/480p/cutout-00/00000.png")
    ids4 = read_mask(root / "Annotations/480p/cutout-00/00004.png")
    assert set(np.unique(ids0).tolist()) == {0, 1, 2} and not np.array_equal(ids0, ids4)
    # sequence 0: background from photo 0 (noise), object 1 cut from photo 1 (flat grey)
    img = np.asarray(Image.open(root / "JPEGImages/480p/cutout-00/00000.jpg")).astype(int)
    assert np.abs(img[ids0 == 1] - 200).mean() < 12 and np.abs(img[ids0 == 0] - 200).mean() > 30
