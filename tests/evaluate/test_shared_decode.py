"""One decode pass for several backbones gives the same stores as separate extractions."""

import numpy as np

from vidcache.cache import Store
from vidcache.extract.clips import ClipExtractConfig, extract_clips, extract_clips_many
from vidcache.models import create_backbone


def test_many_backbones_one_decode_equals_separate_runs(synth_corpus, tmp_path):
    _, manifest = synth_corpus
    cfg = ClipExtractConfig(protocol="uniform:2", workers=0, batch_size=3, videos_per_block=8)
    bbs = [create_backbone("tiny", seed=s, image_size=32) for s in (1, 2)]
    for bb, s in zip(bbs, (1, 2)):
        bb.name = f"tiny-seed{s}"
    got = extract_clips_many(manifest, [str(tmp_path / "m0.zarr"), str(tmp_path / "m1.zarr")], cfg, bbs)
    assert [s.videos for s in got] == [16, 16] and all(s.counts["done"] == 16 for s in got)
    for i, bb in enumerate(bbs):
        one = ClipExtractConfig(**{**cfg.__dict__, "backbone": bb.name})
        extract_clips(manifest, str(tmp_path / f"s{i}.zarr"), one, backbone=bb)
        a, b = Store.open(tmp_path / f"m{i}.zarr"), Store.open(tmp_path / f"s{i}.zarr")
        assert a.config_hash == b.config_hash
        for name in ("clips/emb", "clips/box", "videos/status", "videos/num_frames"):
            np.testing.assert_array_equal(np.asarray(a.group[name][:]), np.asarray(b.group[name][:]), err_msg=name)
    e0 = Store.open(tmp_path / "m0.zarr").load(("emb",))["emb"]
    e1 = Store.open(tmp_path / "m1.zarr").load(("emb",))["emb"]
    assert not np.array_equal(e0, e1)  # each backbone wrote its own features
    # Resuming a complete pair decodes nothing.
    again = extract_clips_many(manifest, [str(tmp_path / "m0.zarr"), str(tmp_path / "m1.zarr")], cfg, bbs)
    assert [s.videos for s in again] == [0, 0]
