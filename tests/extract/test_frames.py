"""Frame-token stores: frames:... protocols, whole-frame resizing, per-frame token grids with frame indices."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidcache.cache import Store
from vidcache.data.davis import manifest_from_davis
from vidcache.data.manifest import read_manifest
from vidcache.errors import ConfigError
from vidcache.extract.clips import ClipExtractConfig, extract_clips
from vidcache.extract.sampling import frame_size, parse_frame_protocol
from vidcache.models import create_backbone
from vidcache.video.decode import open_video


def test_frame_protocols():
    assert parse_frame_protocol("frames:all").select(5).tolist() == [0, 1, 2, 3, 4]
    assert parse_frame_protocol("frames:3").select(5).tolist() == [0, 1, 2]
    assert parse_frame_protocol("frames:3:2").select(5).tolist() == [0, 2, 4]
    assert parse_frame_protocol("frames:10:3").select(7).tolist() == [0, 3, 6]
    assert parse_frame_protocol("frames:all:2").select(5).tolist() == [0, 2, 4]
    assert str(parse_frame_protocol("FRAMES:4:1")) == "frames:4"
    for bad in ("frames", "frames:0", "frames:2:0", "frames:x"):
        with pytest.raises(ConfigError):
            parse_frame_protocol(bad)


def _dino_read_frame_size(ori_h, ori_w, s=480):
    # re-typed from facebookresearch/dino eval_video_segmentation.py read_frame
    if ori_h > ori_w:
        tw = s
        th = int(((s * ori_h) / ori_w // 64) * 64)
    else:
        th = s
        tw = int(((th * ori_w) / ori_h // 64) * 64)
    return th, tw


@pytest.mark.parametrize("hw", [(480, 854), (480, 910), (1080, 1920), (854, 480), (720, 720), (360, 640)])
def test_frame_size_is_dinos(hw):
    assert frame_size(*hw, 480, 64) == _dino_read_frame_size(*hw)


def test_config_checks_frame_options():
    with pytest.raises(ConfigError) as e:
        from vidcache.config import check

        check(ClipExtractConfig(protocol="frames:all", tokens="none", short_side=0))
    assert "--tokens full" in str(e.value) and "short_side" in str(e.value)
    with pytest.raises(ConfigError, match="frames"):
        check(ClipExtractConfig(protocol="1x1", short_side=64))


def test_frame_store_holds_each_frames_tokens(synth_corpus, tmp_path):
    path, manifest = synth_corpus
    cfg = ClipExtractConfig(backbone="tiny_frame", backbone_options={"patch_size": 8}, protocol="frames:6:2",
                            tokens="full", short_side=32, workers=0, batch_size=4)
    s = extract_clips(read_manifest(path), tmp_path / "f.zarr", cfg)
    assert s.counts["done"] == len(manifest)
    store = Store.open(tmp_path / "f.zarr")
    tok = store.group["clips/frame_tokens"]
    assert tok.shape == (len(manifest), 6, 4, 4, 96) and tok.dtype == np.float16
    np.testing.assert_array_equal(store.group["clips/frame_index"][3], [0, 2, 4, 6, 8, 10])
    v = store.videos()
    assert v["num_token_frames"].tolist() == [6] * len(manifest) and set(v["grid_h"].tolist()) == {4}
    assert v["masks"][0].endswith("annotations/" + manifest.classes[manifest.labels[0]] + "/00000")
    # independent recomputation of video 3's tokens: decode, resize whole frames, run the image ViT
    bb = create_backbone("tiny_frame", patch_size=8).eval()
    with open_video(manifest.paths[3]) as video:
        frames = torch.from_numpy(video.get_frames([0, 2, 4, 6, 8, 10])).permute(0, 3, 1, 2).float()
    x = F.interpolate(frames, size=(32, 32), mode="bilinear", antialias=True, align_corners=False) / 255
    x = (x - torch.tensor(bb.mean).view(1, 3, 1, 1)) / torch.tensor(bb.std).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = bb.encode_frames(x).reshape(6, 4, 4, 96).numpy()
    np.testing.assert_allclose(tok[3].astype(np.float32), ref, atol=2e-2, rtol=1e-2)


def test_video_backbone_gives_one_token_frame_per_tubelet(synth_corpus, tmp_path):
    path, manifest = synth_corpus
    cfg = ClipExtractConfig(backbone="tiny", protocol="frames:all", tokens="full", short_side=32, workers=0)
    extract_clips(read_manifest(path), tmp_path / "v.zarr", cfg)
    store = Store.open(tmp_path / "v.zarr")
    assert store.attrs["frames_per_token"] == 4
    # 16 frames, clips of 8 with tubelets of 4: 4 token frames starting at 0, 4, 8, 12
    np.testing.assert_array_equal(store.group["clips/frame_index"][0], [0, 4, 8, 12])
    assert store.group["clips/frame_tokens"].shape[1:] == (4, 4, 4, 96)


def test_davis_frames_of_two_sizes_are_padded(tmp_path, make_davis):
    make_davis(tmp_path / "a", seqs=(("wide", "train", 3),), size=(24, 40))
    make_davis(tmp_path / "b", seqs=(("tall", "val", 5),), size=(40, 24))
    m1, m2 = manifest_from_davis(tmp_path / "a"), manifest_from_davis(tmp_path / "b")
    from vidcache.data.manifest import Manifest

    m = Manifest(m1.paths + m2.paths, np.array([-1, -1]), m1.splits + m2.splits, [], masks=m1.masks + m2.masks)
    cfg = ClipExtractConfig(backbone="tiny_frame", backbone_options={"patch_size": 8}, protocol="frames:all",
                            tokens="full", short_side=16, size_multiple=8, workers=0)
    extract_clips(m, tmp_path / "d.zarr", cfg)
    store = Store.open(tmp_path / "d.zarr")
    v = store.videos()
    # wide: 16 x floor(40*16/24 / 8)*8 = 16 x 24 -> 2 x 3 grid; tall: 24 x 16 -> 3 x 2
    assert v["grid_h"].tolist() == [2, 3] and v["grid_w"].tolist() == [3, 2]
    assert v["num_token_frames"].tolist() == [3, 5]
    tok = store.group["clips/frame_tokens"]
    assert tok.shape == (2, 5, 3, 3, 96)
    assert not np.any(tok[0][3:]) and not np.any(tok[0][:, 2]) and np.all(np.any(tok[0][:3, :2, :3], -1))
    np.testing.assert_array_equal(store.group["clips/frame_index"][0], [0, 1, 2, -1, -1])
