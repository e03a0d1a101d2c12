"""Linear segmentation through the shared grid loop: selection by val mIoU, masks, reports."""

import json

import numpy as np
import pytest

from vidcache.data.davis import read_mask
from vidcache.dense.linseg import LinsegConfig, run_linseg
from vidcache.errors import ConfigError


@pytest.fixture(scope="module")
def store(tmp_path_factory, davis_patch_store):
    return davis_patch_store(tmp_path_factory.mktemp("ls"), (("a", "train", 4), ("b", "train", 4), ("c", "val", 5)))


def test_linseg_selects_on_val_miou_and_writes_masks(store, tmp_path):
    root, s = store
    cfg = LinsegConfig(lrs=[1e-3, 3e-2], wds=[1e-3], epochs=30, batch_size=64, device="cpu")
    res = run_linseg(s, tmp_path / "o", cfg)
    assert res["num_classes"] == 3 and res["num_train_patches"] == 8 * 12 * 16
    vals = [g["val_mIoU"] for g in res["grid"]]
    assert res["selected"]["index"] == int(np.argmax(vals)) and res["val"]["mIoU"] == max(vals)
    assert res["val"]["mIoU"] > 0.6  # the squares are separable by colour
    assert "test" not in res and "no 'test' split" in res["warnings"][0]
    pred = read_mask(tmp_path / "o" / "Annotations" / "c" / "00004.png")
    assert pred.shape == (24, 32) and (pred == read_mask(root / "Annotations/480p/c/00004.png")).mean() > 0.85
    assert json.loads((tmp_path / "o" / "results.json").read_text())["val"]["mIoU"] == res["val"]["mIoU"]


def test_linseg_config_problems():
    from vidcache.config import check

    with pytest.raises(ConfigError) as e:
        check(LinsegConfig(labels="x", frames_per_video=0, sample="video"))
    assert all(w in str(e.value) for w in ("labels", "frames_per_video", "sample must be clip"))
