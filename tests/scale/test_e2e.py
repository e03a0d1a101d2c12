"""SCALE end to end on the synthetic corpus: extract two stores, train, evaluate the table.

The motion classes of the corpus (left/right, up/down) have identically distributed frames within
a pair, so a per-frame backbone's mean over clips cannot tell a video from its reverse; only a
model that reads the clips with their time boxes, as SCALE does, can.
"""

import numpy as np
import torch

from vidcache.cache.store import Store
from vidcache.data.manifest import Manifest
from vidcache.data.synth import SynthConfig, class_kind, synthesize
from vidcache.extract.clips import ClipExtractConfig, extract_clips
from vidcache.scale.config import ScaleConfig
from vidcache.scale.evaluate import ScaleEvalConfig, evaluate_run, scale_features
from vidcache.scale.train import load_run, train_from_store


def _motion_corpus(root) -> Manifest:
    """Motion videos of the first six synthetic classes, relabelled 0..3 (two direction pairs)."""
    full = synthesize(root / "corpus", SynthConfig(videos=72, classes=6, seed=0, val_fraction=0.15,
                                                   test_fraction=0.25), workers=2)
    classes = [c for c in full.classes if class_kind(c) == "motion"]
    keep = [i for i, y in enumerate(full.labels) if class_kind(full.classes[y]) == "motion"]
    return Manifest([full.paths[i] for i in keep],
                    np.array([classes.index(full.classes[full.labels[i]]) for i in keep]),
                    [full.splits[i] for i in keep], classes)


def test_scale_pipeline_on_the_synthetic_corpus(tmp_path):
    manifest = _motion_corpus(tmp_path)
    assert manifest.classes == ["motion_left", "motion_right", "motion_up", "motion_down"]
    train_store, eval_store = tmp_path / "train.zarr", tmp_path / "eval.zarr"
    for path, protocol in ((train_store, "random:16:0"), (eval_store, "uniform:8")):
        summary = extract_clips(manifest, str(path), ClipExtractConfig(backbone="pixels", protocol=protocol,
                                                                       workers=2))
        assert summary.videos == len(manifest)

    tr = Store.open(str(train_store), kind="clips").load(arrays=("emb", "box"), split="train")
    ev = Store.open(str(eval_store), kind="clips").load(arrays=("emb", "box"), split="test")
    assert tr["emb"].shape == (len(manifest.split_indices("train")), 16, 192)
    assert ev["emb"].shape == (len(manifest.split_indices("test")), 8, 192)
    # random:16 draws crops smaller than the frame; uniform:8 covers it, 8 windows in time order.
    assert (tr["box"][..., 3] - tr["box"][..., 0] < 1).any()
    np.testing.assert_allclose(ev["box"][..., [0, 1, 3, 4]], np.broadcast_to([0, 0, 1, 1], (*ev["box"].shape[:2], 4)))
    assert (np.diff(ev["box"][..., 2], axis=1) > 0).all()

    cfg = ScaleConfig(hidden_dim=32, depth=1, num_heads=2, head_hidden=64, pred_head_hidden=64,
                      target_head_hidden=64, proj_dim=16, clips_per_set=4,
                      epochs=8, batch_size=16, lr=1e-3, device="cpu", checkpoint_every=100, log_every=100)
    train_from_store(train_store, tmp_path / "run", cfg)
    model, _, info = load_run(tmp_path / "run")
    assert info["source"]["config_hash"] == Store.open(str(train_store), kind="clips").config_hash

    # Reversing the clips' time boxes leaves the mean-pooled embedding (what Linear sees) unchanged
    # but changes SCALE's set token: the predictor reads the order of the clips.
    emb, box = ev["emb"].astype(np.float32), ev["box"].copy()
    rev = box.copy()
    rev[..., 2], rev[..., 5] = 1 - box[..., 5], 1 - box[..., 2]
    _, _, cls = scale_features(model.predictor, emb, box)
    _, _, cls_rev = scale_features(model.predictor, emb, rev)
    assert np.abs(cls - cls_rev).max() > 1e-3
    torch.testing.assert_close(torch.from_numpy(emb.mean(1)), torch.from_numpy(emb[:, ::-1].mean(1)))

    summary = evaluate_run(tmp_path / "run", train_store, eval_store, tmp_path / "eval",
                           ScaleEvalConfig(rows=["linear", "scale_linear"], epochs=5, lrs=[1e-3], wds=[1e-4],
                                           device="cpu"))
    assert [r["method"] for r in summary["table"]] == ["Linear", "SCALE_linear"]
    assert summary["num_videos"] == {s: len(manifest.split_indices(s)) for s in ("train", "val", "test")}
    for row in summary["table"]:
        assert 0 <= row["test_top1"] <= 100
    assert (tmp_path / "eval" / "results.json").is_file()
    assert (tmp_path / "eval" / "scale_linear" / "results.json").is_file()
