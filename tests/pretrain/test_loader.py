"""Clips from codes: decoding equals CodeDecoder on the stored codes, crops on codes equal pixel crops."""

import numpy as np
import pytest
import torch

from vidcache.cache import Store
from vidcache.codec import CodeDecoder, decode_codes_np, preprocess_frames, select_frames
from vidcache.video.decode import open_video
from vidcache.models.backbone import IMAGENET_MEAN, IMAGENET_STD
from vidcache.pretrain.loader import (
    ClipDecoder,
    ClipSampling,
    CodeClipDataset,
    CodeSource,
    Mp4ClipDataset,
    PixelDecoder,
    StreamSampler,
    collate,
    collate_arrays,
    crop_codes,
    crop_index,
    make_loader,
    mirror_tiles,
)


@pytest.fixture(scope="module")
def source(code_store):
    return CodeSource.from_store(code_store[0], split=None)


def _decoded_full(cb, codes):
    """Reference decode of codes [T, g, g]: CodeDecoder in 0..255 -> [T, H, W, 3]."""
    x = CodeDecoder(cb)(torch.from_numpy(codes.astype(np.int64))[None])
    return x[0].permute(1, 2, 3, 0)


def test_batch_from_codes_equals_code_decoder_on_stored_codes(code_store, source):
    url, cb = code_store
    sampling = ClipSampling(length=4, stride=3, out_grid=source.grid, crop_scale=(1.0, 1.0), crop_aspect=(1.0, 1.0),
                            flip=False, seed=5)
    ds = CodeClipDataset(source, sampling)
    keys = [(i, 100 + i) for i in (0, 3, 7)]
    batch = collate([ds[k] for k in keys])
    video = ClipDecoder(source.centroids, source.patch, IMAGENET_MEAN, IMAGENET_STD)(batch["codes"], batch["flip"])
    assert video.shape == (3, 3, 4, 32, 32)
    stored = Store.open(url, kind="codes").group["codes/frames"]
    ref_dec = CodeDecoder(cb, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    for b, (i, pos) in enumerate(keys):
        frames, _, _ = sampling(int(source.num_code_frames[i]), source.grid, pos)
        assert np.all(np.diff(frames) == 3)
        ref = ref_dec(torch.from_numpy(stored[int(source.rows[i])][frames].astype(np.int64))[None])[0]
        torch.testing.assert_close(video[b], ref, rtol=0, atol=1e-5)


def test_crop_and_flip_on_codes_equal_cropping_decoded_pixels(code_store, source):
    _, cb = code_store
    p = source.patch
    codes = source.codes[2, :3]  # [3, 8, 8]
    full = _decoded_full(cb, codes)  # [3, 32, 32, 3]
    dec = ClipDecoder(source.centroids, p, (0, 0, 0), (1 / 255, 1 / 255, 1 / 255))  # output in 0..255
    # A crop of the output size is a plain crop of the decoded frames.
    box = (1, 2, 5, 5)
    cropped = crop_codes(codes, box, out=5)
    got = dec(torch.from_numpy(cropped)[None], torch.tensor([False]))[0].permute(1, 2, 3, 0)
    torch.testing.assert_close(got, full[:, 4:24, 8:28], rtol=0, atol=1e-3)
    # Flipped: the same crop mirrored left-right, pixel for pixel.
    flipped = crop_codes(codes, box, out=5, flip=True)
    got = dec(torch.from_numpy(flipped)[None], torch.tensor([True]))[0].permute(1, 2, 3, 0)
    torch.testing.assert_close(got, full[:, 4:24, 8:28].flip(2), rtol=0, atol=1e-3)
    # A 3 x 6 box stretched to 6 x 6 cells repeats whole tiles (nearest cell): row cells 0,0,1,1,2,2.
    got = dec(torch.from_numpy(crop_codes(codes, (0, 1, 3, 6), out=6))[None], torch.tensor([False]))[0]
    rows = np.concatenate([np.arange(c * p, c * p + p) for c in (0, 0, 1, 1, 2, 2)])
    cols = np.concatenate([np.arange(c * p, c * p + p) for c in range(1, 7)])
    torch.testing.assert_close(got.permute(1, 2, 3, 0), full[:, rows][:, :, cols], rtol=0, atol=1e-3)


def _random_crop_keys(source, sampling, count=12):
    """Keys whose clips include flipped and unflipped ones (asserted, so the tests cover both)."""
    keys = [(int(i) % len(source), 200 + 7 * int(i)) for i in range(count)]
    flips = [sampling(int(source.num_code_frames[i]), source.grid, pos)[2] for i, pos in keys]
    assert any(flips) and not all(flips)
    return keys


@pytest.mark.parametrize("out_grid, scale", [(6, (0.3, 1.0)), (8, (0.3, 1.0)), (8, (1.0, 1.0)), (5, (0.05, 0.2))])
def test_batched_clips_equal_clips_cut_one_by_one(source, out_grid, scale):
    """One gather for the batch cuts what `crop_codes` cuts per clip: stretched boxes, plain crops, flips."""
    sampling = ClipSampling(length=6, stride=3, out_grid=out_grid, crop_scale=scale, seed=11)
    keys = _random_crop_keys(source, sampling)
    items = CodeClipDataset(source, sampling).__getitems__(keys)
    for (i, pos), item in zip(keys, items):
        frames, box, flip = sampling(int(source.num_code_frames[i]), source.grid, pos)
        ref = crop_codes(source.codes[i, frames], box, out_grid, flip)
        assert item["codes"].dtype == source.codes.dtype == np.uint16  # K = 300 codes travel as 2 bytes
        np.testing.assert_array_equal(item["codes"], ref)
        assert item["flip"] == flip and item["index"] == i
    # A single item is the same clip as in a batch.
    np.testing.assert_array_equal(CodeClipDataset(source, sampling)[keys[3]]["codes"], items[3]["codes"])


def test_batch_decode_equals_per_clip_code_decoder_and_pixel_crops(source):
    """A batch with flips decodes exactly as each clip alone through a CodeDecoder of the plain or the
    mirrored codebook, and equals cropping, resampling and flipping the decoded full frames."""
    p = source.patch
    sampling = ClipSampling(length=4, stride=2, out_grid=6, seed=4)
    keys = _random_crop_keys(source, sampling, count=8)
    batch = collate(CodeClipDataset(source, sampling).__getitems__(keys))
    video = ClipDecoder(source.centroids, p, IMAGENET_MEAN, IMAGENET_STD)(batch["codes"], batch["flip"])
    assert video.shape == (8, 3, 4, 24, 24)
    plain = CodeDecoder(source.centroids, p, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    mirrored = CodeDecoder(mirror_tiles(source.centroids, p), p, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    pixels = ClipDecoder(source.centroids, p, (0, 0, 0), (1 / 255, 1 / 255, 1 / 255))(batch["codes"], batch["flip"])
    for b, (i, pos) in enumerate(keys):
        frames, box, flip = sampling(int(source.num_code_frames[i]), source.grid, pos)
        ref = (mirrored if flip else plain)(batch["codes"][b:b + 1])[0]
        assert torch.equal(video[b], ref)
        # In pixels: decode the whole frames, take the box's cells (nearest cell), mirror if flipped.
        full = decode_codes_np(source.codes[i, frames], source.centroids, p)  # [T, 32, 32, 3] 0..255
        ys, xs = crop_index(box, 6)
        rows = (ys[:, None] * p + np.arange(p)).ravel()
        cols = (xs[:, None] * p + np.arange(p)).ravel()
        crop = full[:, rows][:, :, cols]
        if flip:
            crop = crop[:, :, ::-1]
        np.testing.assert_allclose(pixels[b].permute(1, 2, 3, 0).numpy(), crop, rtol=0, atol=1e-3)


def test_reused_output_decodes_the_same_bits_into_one_buffer(source):
    """reuse_output: every batch lands in the same tensor, bit-identical to a fresh decode; a new
    batch shape gets a new buffer; a wrong `out` is refused."""
    p = source.patch
    ds = CodeClipDataset(source, ClipSampling(length=4, stride=2, out_grid=6, seed=4))
    fresh = ClipDecoder(source.centroids, p, IMAGENET_MEAN, IMAGENET_STD)
    reused = ClipDecoder(source.centroids, p, IMAGENET_MEAN, IMAGENET_STD, reuse_output=True)
    first = None
    for keys in ([(0, 1), (1, 2), (2, 3)], [(3, 4), (4, 5), (5, 6)]):
        batch = collate(ds.__getitems__(keys))
        got = reused(batch["codes"], batch["flip"])
        first = got if first is None else first
        assert got.data_ptr() == first.data_ptr()
        assert torch.equal(got, fresh(batch["codes"], batch["flip"]))
    batch = collate(ds.__getitems__([(0, 9)]))
    assert reused(batch["codes"], batch["flip"]).shape[0] == 1
    with pytest.raises(ValueError, match="out must be"):
        CodeDecoder(source.centroids, p)(torch.zeros(1, 2, 3, 3, dtype=torch.int64), out=torch.empty(1, 3, 2, 9, 9))

    pixels = torch.randint(0, 256, (2, 4, 8, 8, 3), dtype=torch.uint8)
    plain, kept = PixelDecoder(IMAGENET_MEAN, IMAGENET_STD), PixelDecoder(IMAGENET_MEAN, IMAGENET_STD, reuse_output=True)
    a = kept(pixels)
    assert torch.equal(a, plain(pixels)) and a.shape == (2, 3, 4, 8, 8)
    assert kept(pixels.flip(0)).data_ptr() == a.data_ptr() and torch.equal(a, plain(pixels.flip(0)))


def test_small_arrays_leave_workers_as_numpy_and_batches_arrive_as_tensors(source):
    codes = [{"codes": np.zeros((4, 6, 6), np.uint16), "flip": True, "index": 3}] * 2
    pixels = [{"pixels": np.zeros((16, 128, 128, 3), np.uint8), "flip": False, "index": 1}] * 2
    small, big = collate_arrays(codes), collate_arrays(pixels)
    assert isinstance(small["codes"], np.ndarray) and small["codes"].shape == (2, 4, 6, 6)
    assert isinstance(big["pixels"], torch.Tensor) and big["pixels"].shape == (2, 16, 128, 128, 3)  # 1.5 MB
    assert small["flip"].tolist() == [True, True] and small["index"].tolist() == [3, 3]
    batch = collate(codes)
    assert batch["codes"].dtype == torch.uint16 and batch["flip"].dtype == torch.bool
    assert batch["index"].dtype == torch.int64


def test_mp4_clips_match_the_same_frames_decoded_from_the_videos(source):
    sampling = ClipSampling(length=4, stride=2, out_grid=source.grid, crop_scale=(1.0, 1.0), crop_aspect=(1.0, 1.0),
                            flip=False, seed=1)
    item = Mp4ClipDataset(source, sampling)[(5, 42)]
    frames, _, _ = sampling(int(source.num_code_frames[5]), source.grid, 42)
    with open_video(source.paths[5]) as v:
        idx = select_frames(v.num_frames, v.fps, None, 16)[frames]
        ref = preprocess_frames(v.get_frames(idx.tolist()), 32)
    assert item["pixels"].dtype == np.uint8 and item["index"] == 5 and not item["flip"]
    np.testing.assert_array_equal(item["pixels"], ref)
    # With crops and flips on, the mp4 clip has the output size and the codes clip's flip.
    sampling = ClipSampling(length=4, stride=2, out_grid=6, seed=1)
    mp4, codes = Mp4ClipDataset(source, sampling)[(5, 43)], CodeClipDataset(source, sampling)[(5, 43)]
    assert mp4["pixels"].shape == (4, 24, 24, 3) and codes["codes"].shape == (4, 6, 6)
    assert mp4["flip"] == codes["flip"]


def test_stream_is_shared_by_ranks_and_resumable():
    one = StreamSampler(10, local_batch=6, seed=3)
    two = [StreamSampler(10, local_batch=3, rank=r, world=2, seed=3) for r in range(2)]
    it1, it2 = iter(one), [iter(s) for s in two]
    for _ in range(5):  # 5 steps of 6 = 3 epochs of 10 videos
        global_keys = [next(it1) for _ in range(6)]
        rank_keys = [[next(it) for _ in range(3)] for it in it2]
        assert sorted(global_keys) == sorted(rank_keys[0] + rank_keys[1])
        assert [k[1] for k in rank_keys[0]] == [k[1] for k in global_keys[0::2]]
    it = iter(StreamSampler(10, 6, seed=3))
    keys = [next(it) for _ in range(30)]
    assert sorted(k[0] for k in keys[:10]) == list(range(10))  # each epoch is a permutation
    resumed = iter(StreamSampler(10, 6, seed=3, start_step=2))
    assert [next(resumed) for _ in range(18)] == keys[12:30]


def test_loader_is_deterministic_with_worker_processes(source):
    sampling = ClipSampling(length=4, stride=2, out_grid=6, seed=7)
    ds = CodeClipDataset(source, sampling)

    def batches(workers):
        it = iter(make_loader(ds, StreamSampler(len(source), 4, seed=7), workers=workers))
        return [next(it) for _ in range(3)]

    a, b = batches(0), batches(2)
    for x, y in zip(a, b):
        assert all(isinstance(v, torch.Tensor) for v in (*x.values(), *y.values()))
        assert torch.equal(x["codes"], y["codes"]) and torch.equal(x["flip"], y["flip"])
        assert torch.equal(x["index"], y["index"])
        assert x["codes"].shape == (4, 4, 6, 6) and x["codes"].dtype == torch.uint16
    assert not torch.equal(a[0]["codes"], a[1]["codes"])
