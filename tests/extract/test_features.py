"""Named features in one store: values, CLS refusals, old-schema stores, probes reading a feature."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from vidcache.cache import Store
from vidcache.errors import ConfigError, DataError
from vidcache.extract.clips import ClipExtractConfig, extract_clips

timm = pytest.importorskip("timm")
VIT = {"img_size": 32, "depth": 3, "num_frames": 2, "frame_stride": 2}
FEATS = ["mean", "cls", "cls+avgpool", "last2", "last2+avgpool"]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "vidcache", *map(str, args)], capture_output=True, text=True,
                          env=dict(os.environ))


@pytest.fixture(scope="module")
def feature_store(synth_corpus, tmp_path_factory):
    _, manifest = synth_corpus
    root = tmp_path_factory.mktemp("feat")
    torch.manual_seed(0)
    weights = root / "vit.pth"
    torch.save(timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=3).state_dict(),
               weights)
    spec = f"timm:vit_tiny_patch16_224@{weights}"
    cfg = ClipExtractConfig(backbone=spec, backbone_options=VIT, protocol="1x2",
                            features=FEATS, workers=0, batch_size=3)
    extract_clips(manifest, str(root / "s.zarr"), cfg)
    return Store.open(root / "s.zarr"), manifest, spec


def test_features_are_the_references_inputs(feature_store):
    """cls = the normed CLS of the last block, lastN its last N blocks' (oldest first), avgpool the mean
    of the last block's patch tokens; per frame, then averaged over the clip's frames."""
    from vidcache.video.decode import open_video
    from vidcache.extract.sampling import frames_needed, plan_clips
    from vidcache.extract.transforms import video_clips_tensor
    from vidcache.models import create_backbone

    store, manifest, spec = feature_store
    assert store.features == FEATS and store.schema == 2
    d = store.load(("emb", "clips/features/cls", "clips/features/cls_avgpool", "clips/features/last2",
                    "clips/features/last2_avgpool"))
    assert d["cls"].shape == (16, 2, 192) and d["last2_avgpool"].shape == (16, 2, 3 * 192)
    bb = create_backbone(spec, **VIT)
    m = bb.model
    with open_video(manifest.paths[0]) as v:
        specs = plan_clips("1x2", v.num_frames, v.height, v.width, bb.num_frames, bb.frame_stride)
        frames = v.get_frames(frames_needed(specs)[0].tolist())
    clips = video_clips_tensor(frames, specs, bb.image_size, bb.mean, bb.std)  # [2, 3, T, S, S]
    with torch.no_grad():
        per_frame = clips.transpose(1, 2).flatten(0, 1)
        # an independent route through timm: run the blocks by hand, norm each of the last two
        x = m._pos_embed(m.patch_embed(per_frame))
        hidden = []
        for blk in m.blocks:
            x = blk(x)
            hidden.append(m.norm(x))
        cls1 = hidden[-1][:, 0].view(2, 2, -1).mean(1)
        cls2 = hidden[-2][:, 0].view(2, 2, -1).mean(1)
        avg = hidden[-1][:, 1:].reshape(2, -1, 192).mean(1)
    tol = dict(atol=2e-3, rtol=2e-3)
    np.testing.assert_allclose(d["cls"][0].astype(np.float32), cls1.numpy(), **tol)
    np.testing.assert_allclose(d["last2"][0].astype(np.float32), torch.cat([cls2, cls1], -1).numpy(), **tol)
    np.testing.assert_allclose(d["cls_avgpool"][0].astype(np.float32), torch.cat([cls1, avg], -1).numpy(), **tol)
    np.testing.assert_allclose(d["last2_avgpool"][0].astype(np.float32),
                               torch.cat([cls2, cls1, avg], -1).numpy(), **tol)
    np.testing.assert_allclose(d["emb"][0].astype(np.float32), avg.numpy(), **tol)  # mean = avgpool here


def test_probe_reads_a_named_feature_and_names_the_ones_a_store_has(feature_store, tmp_path):
    from vidcache.probe.run import make_config, run_probe

    store = feature_store[0]
    res = run_probe("knn", store, tmp_path / "k", make_config("knn", ks=[1, 3], feature="cls+avgpool",
                                                              device="cpu", val_fraction=0.0))
    assert res["dim"] == 384 and res["feature"] == "cls+avgpool"
    with pytest.raises(DataError, match="has no feature 'last4'; it has: mean, cls, cls\\+avgpool, last2"):
        run_probe("knn", store, None, make_config("knn", feature="last4", device="cpu"))
    with pytest.raises(ConfigError, match="unknown feature"):
        from vidcache.models.features import parse_feature
        parse_feature("first3")


def test_cls_features_on_a_backbone_without_cls_are_refused(synth_corpus, tmp_path):
    _, manifest = synth_corpus
    with pytest.raises(ConfigError, match="need a CLS token but tiny has none"):
        extract_clips(manifest, str(tmp_path / "s.zarr"), ClipExtractConfig(features=["mean", "cls"], workers=0))
    assert not (tmp_path / "s.zarr").exists()  # refused before any work
    r = _cli("extract", "clips", manifest.write(tmp_path / "m.csv") or tmp_path / "m.csv", "-o",
             tmp_path / "t.zarr", "--preset", "dino-knn", "--workers", "0")
    assert r.returncode == 2 and "has none" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_old_schema_store_still_opens_and_probes(synth_corpus, tmp_path):
    """A schema-1 store (before named features) opens, resumes and probes as a store of `mean` only;
    default features hash as before, so its config hash still matches."""
    from vidcache.probe.run import make_config, run_probe

    _, manifest = synth_corpus
    cfg = ClipExtractConfig(protocol="uniform:2", workers=0, videos_per_block=4)
    extract_clips(manifest, str(tmp_path / "s.zarr"), cfg)
    meta = tmp_path / "s.zarr" / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["vidcache"]["schema"] = 1
    del doc["attributes"]["features"], doc["attributes"]["has_cls"]
    meta.write_text(json.dumps(doc))
    old = Store.open(tmp_path / "s.zarr")
    assert old.schema == 1 and old.features == ["mean"]
    assert extract_clips(manifest, str(tmp_path / "s.zarr"), cfg).videos == 0  # same hash: resumes
    res = run_probe("knn", old, None, make_config("knn", ks=[1], device="cpu"))
    assert res["feature"] == "mean"
    with pytest.raises(DataError, match="it has: mean"):
        run_probe("knn", old, None, make_config("knn", feature="cls", device="cpu"))
