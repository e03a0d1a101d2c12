import json
import math

import numpy as np
import pytest
import torch

from vidcache.codec import (
    Codebook,
    CodecConfig,
    CodeDecoder,
    code_dtype,
    decode_codes_np,
    evaluate_codes,
    fit_codebook,
    kmeans,
    load_codebook,
    patchify,
    preprocess_frames,
    psnr,
    sample_patches,
    select_frames,
    training_digest,
    unpatchify,
    write_preview,
)
from vidcache.config import check
from vidcache.errors import ConfigError, DataError


def _frames(t=3, h=24, w=32, seed=0):
    """Smooth random frames (blocky colours), so k-means has structure to find."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (t, h // 4, w // 4, 3), dtype=np.uint8)
    return np.repeat(np.repeat(small, 4, axis=1), 4, axis=2)


def _codebook(k=32, patch=4, size=16, seed=0, pixel_space="rgb255"):
    rng = np.random.default_rng(seed)
    cents = rng.uniform(0, 255, (k, patch * patch * 3)).astype(np.float32)
    if pixel_space == "rgb01":
        cents /= 255
    return Codebook(cents, {"patch": patch, "size": size, "pixel_space": pixel_space}, device="cpu")


# ---------------------------------------------------------------- frames

def test_select_frames_resample_and_centre_window():
    assert select_frames(10, 30.0).tolist() == list(range(10))
    assert select_frames(10, 30.0, fps=15).tolist() == [0, 2, 4, 6, 8]
    assert select_frames(10, 30.0, fps=60).tolist() == list(range(10))  # never upsampled
    assert select_frames(10, 25.0, fps=10).tolist() == [0, 2, 5, 7]  # floor(i * 2.5)
    assert select_frames(10, 30.0, max_frames=4).tolist() == [3, 4, 5, 6]
    assert select_frames(3, 30.0, max_frames=8).tolist() == [0, 1, 2]
    with pytest.raises(ConfigError, match="fps must be > 0"):
        select_frames(10, 30.0, fps=0)
    with pytest.raises(DataError, match="no frames"):
        select_frames(0, 30.0)


def test_preprocess_resizes_short_side_and_centre_crops():
    frames = np.zeros((2, 40, 80, 3), np.uint8)
    frames[:, :, 30:50] = 200  # a centred vertical band survives the centre crop
    out = preprocess_frames(frames, 20)
    assert out.shape == (2, 20, 20, 3) and out.dtype == np.uint8
    # 40x80 -> 20x40, crop columns 10..30: the band (30..50 -> 15..25) lands on columns 5..15.
    assert (out[:, :, 6:14] == 200).all() and (out[:, :, :4] == 0).all() and (out[:, :, 16:] == 0).all()
    const = np.full((1, 30, 50, 3), 77, np.uint8)
    assert (preprocess_frames(const, 10) == 77).all()
    same = _frames(1, 16, 16)
    assert np.array_equal(preprocess_frames(same, 16), same)


def test_patchify_layout_and_inverse():
    frames = _frames(2, 8, 12, seed=3)
    grid = patchify(frames, 4)
    assert grid.shape == (2, 2, 3, 48)
    # patch (row 1, col 2) of frame 1 is the 4x4 tile at rows 4..8, cols 8..12, flattened [p, p, 3]
    assert np.array_equal(grid[1, 1, 2], frames[1, 4:8, 8:12].reshape(-1))
    assert np.array_equal(unpatchify(grid, 4), frames)


# ---------------------------------------------------------------- encode / decode

@pytest.mark.parametrize("pixel_space", ["rgb255", "rgb01"])
def test_encode_decode_equals_bruteforce_nearest_centroid(pixel_space):
    cb = _codebook(k=300, patch=4, size=16, pixel_space=pixel_space)
    frames = _frames(2, 24, 32, seed=1)
    codes = cb.encode_frames(frames)
    assert codes.shape == (2, 4, 4) and codes.dtype == np.uint16

    pre = preprocess_frames(frames, 16).astype(np.float64)
    cents = cb.centroids.astype(np.float64) * (255.0 if pixel_space == "rgb01" else 1.0)
    expect = np.empty((2, 16, 16, 3))
    for t in range(2):
        for i in range(4):
            for j in range(4):
                tile = pre[t, 4 * i:4 * i + 4, 4 * j:4 * j + 4].reshape(-1)
                best = np.argmin(((cents - tile) ** 2).sum(1))
                assert codes[t, i, j] == best
                expect[t, 4 * i:4 * i + 4, 4 * j:4 * j + 4] = cents[best].reshape(4, 4, 3)
    np.testing.assert_allclose(cb.decode(codes), expect, rtol=0, atol=1e-3)


def test_code_dtype_and_k_limit():
    assert code_dtype(256) == np.uint8 and code_dtype(257) == np.uint16 and code_dtype(65536) == np.uint16
    assert _codebook(k=256).encode_frames(_frames()).dtype == np.uint8
    with pytest.raises(ConfigError, match="uint16"):
        code_dtype(65537)
    with pytest.raises(ConfigError, match=r"k must be in \[2, 65536\]"):
        check(CodecConfig(k=65537))
    with pytest.raises(DataError, match="do not fit in uint16"):
        Codebook(np.zeros((65537, 12), np.float32), {"patch": 2, "size": 4, "pixel_space": "rgb255"})


def test_config_reports_every_problem():
    with pytest.raises(ConfigError) as e:
        check(CodecConfig(k=1, size=165, patch=10, pixel_space="yuv", niter=0))
    msg = str(e.value)
    for part in ("k must be", "not divisible by patch 10 (try 160 or 170)", "pixel_space", "niter"):
        assert part in msg


@pytest.mark.parametrize("normalise", [False, True])
def test_code_decoder_matches_numpy(normalise):
    cb = _codebook(k=50, patch=3, size=9, pixel_space="rgb01")
    codes = np.random.default_rng(0).integers(0, 50, (2, 4, 3, 3)).astype(np.uint16)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    dec = CodeDecoder(cb, mean=mean if normalise else None, std=std if normalise else None)
    out = dec(torch.from_numpy(codes.astype(np.int32)))
    assert out.shape == (2, 3, 4, 9, 9)
    ref = decode_codes_np(codes, cb.centroids_255(), 3)  # [B, T, H, W, 3] in 0..255
    if normalise:
        ref = (ref / 255 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(out.numpy(), ref.transpose(0, 4, 1, 2, 3), rtol=1e-5, atol=1e-4)
    assert "codebook" in dec.state_dict()


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int64])
def test_code_decoder_lays_out_exactly_the_codebook_tiles(dtype):
    """The row gather writes each tile's pixels bit for bit where a tile gather + permute puts them."""
    rng = np.random.default_rng(1)
    for patch, (b, t, h, w) in ((3, (2, 3, 4, 5)), (4, (1, 2, 3, 3))):
        dec = CodeDecoder(_codebook(k=50, patch=patch, size=4 * patch), mean=(0.485, 0.456, 0.406),
                          std=(0.229, 0.224, 0.225))
        codes = rng.integers(0, 50, (b, t, h, w)).astype(dtype)
        out = dec(torch.from_numpy(codes))
        assert out.shape == (b, 3, t, h * patch, w * patch) and out.dtype == torch.float32
        tiles = dec.codebook[torch.from_numpy(codes.astype(np.int64))].view(b, t, h, w, patch, patch, 3)
        ref = tiles.permute(0, 6, 1, 2, 4, 3, 5).reshape(b, 3, t, h * patch, w * patch)
        assert torch.equal(out, ref)
        # One pixel by hand: clip 0, frame 1, cell (row 1, column 2), tile pixel (y 1, x 2), blue.
        tile = dec.codebook[int(codes[0, 1, 1, 2])].view(patch, patch, 3)
        assert out[0, 2, 1, patch + 1, 2 * patch + 2] == tile[1, 2, 2]
        # A strided view decodes like its contiguous copy.
        view = torch.from_numpy(codes).transpose(2, 3)
        assert torch.equal(dec(view), dec(view.contiguous()))


def test_code_decoder_saves_only_the_codebook_and_follows_a_loaded_one():
    a, b = CodeDecoder(_codebook(k=40, seed=0)), CodeDecoder(_codebook(k=40, seed=1))
    assert set(a.state_dict()) == {"codebook"}
    codes = torch.from_numpy(np.random.default_rng(2).integers(0, 40, (2, 3, 4, 4)))
    assert not torch.equal(a(codes), b(codes))
    a.load_state_dict(b.state_dict())
    assert torch.equal(a(codes), b(codes))


# ---------------------------------------------------------------- PSNR, evaluation

def test_psnr_golden():
    a = np.zeros((2, 2), np.uint8)
    b = a.copy()
    b[0, 0] = 10  # MSE = 100 / 4 = 25 -> 10 log10(255^2 / 25) = 10 log10(2601)
    assert psnr(a, b) == pytest.approx(34.15140352195873, abs=1e-9)
    assert psnr(a, b, max_val=1.0) == pytest.approx(10 * math.log10(1 / 25))
    assert psnr(a, a) == math.inf
    with pytest.raises(DataError, match="equal shapes"):
        psnr(a, np.zeros(3))


def test_evaluate_codes_and_preview(tmp_path):
    cb = _codebook(k=256, patch=4, size=16)
    frames = preprocess_frames(_frames(3, 24, 32, seed=5), 16)
    codes = cb.encode_frames(frames, preprocess=False)
    res = evaluate_codes([frames], [codes], cb, names=["v"])
    assert res["psnr_per_video"]["v"] == pytest.approx(psnr(frames, cb.decode(codes)))
    assert res["compression_codes"] == 48.0 == cb.compression()  # 4*4*3 bytes -> 1 byte (uint8)
    png = write_preview(frames, cb.decode(codes), tmp_path / "p.png", title="t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- k-means, training, files

def test_kmeans_converges_to_lloyd_fixed_point():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [100, 0], [0, 100], [100, 100]], np.float32)
    x = np.concatenate([c + rng.normal(0, 1, (50, 2)) for c in centres]).astype(np.float32)
    found, stats = kmeans(x, 4, niter=10, seed=0, device="cpu", progress=False)
    # A converged Lloyd solution: every centroid is the mean of the points nearest to it.
    near = np.argmin(((x[:, None, :].astype(np.float64) - found[None]) ** 2).sum(-1), axis=1)
    for j in range(4):
        np.testing.assert_allclose(found[j], x[near == j].mean(0), atol=1e-4)
    assert all(b <= a + 1e-9 for a, b in zip(stats["objective"], stats["objective"][1:]))
    # With these well-separated blobs the seed-0 start reaches the true clusters.
    truth = np.stack([x[i * 50:(i + 1) * 50].mean(0) for i in range(4)])
    order = lambda a: a[np.lexsort(a.T[::-1])]  # noqa: E731
    np.testing.assert_allclose(order(found), order(truth), atol=1e-4)
    with pytest.raises(ConfigError, match="at least k=300"):
        kmeans(x, 300, niter=1, device="cpu", progress=False)


def test_kmeans_reseeds_empty_clusters():
    # 3 distinct points, k=3 but 6 duplicates of one point: a duplicate start leaves a cluster
    # empty; it must be re-seeded by splitting, ending with every point its own centroid.
    x = np.array([[0, 0]] * 6 + [[10, 0], [0, 10]], np.float32)
    found, stats = kmeans(x, 3, niter=8, seed=0, device="cpu", progress=False)
    assert stats["empty_splits"] >= 1
    assert sorted(map(tuple, np.round(found, 2))) == [(0.0, 0.0), (0.0, 10.0), (10.0, 0.0)]


def test_training_is_deterministic_and_roundtrips(tmp_path):
    cfg = CodecConfig(k=16, patch=4, size=16, niter=4, seed=7, max_patches=200, device="cpu")
    sets = [_frames(2, 24, 32, seed=s) for s in range(3)]
    info = {"train_digest": training_digest([("b.mp4", [1, 2]), ("a.mp4", [0])])}
    a = fit_codebook(sample_patches(sets, cfg, quota=20), cfg, progress=False, **info)
    b = fit_codebook(sample_patches(sets, cfg, quota=20), cfg, progress=False, **info)
    assert np.array_equal(a.centroids, b.centroids)
    cfg2 = CodecConfig(**{**cfg.__dict__, "seed": 8})
    c = fit_codebook(sample_patches(sets, cfg2, quota=20), cfg2, progress=False, **info)
    assert not np.array_equal(a.centroids, c.centroids)
    assert a.config["n_train_patches"] == 60 and a.config["train_digest"] == training_digest(
        [("a.mp4", [0]), ("b.mp4", [1, 2])])

    path = a.save(tmp_path / "cb.npz")
    loaded = load_codebook(path, device="cpu")
    assert np.array_equal(loaded.centroids, a.centroids) and loaded.config["seed"] == 7
    assert loaded.k == 16 and loaded.patch == 4 and loaded.size == 16
    assert np.array_equal(loaded.encode_frames(sets[0]), a.encode_frames(sets[0]))


def test_load_codebook_failures(tmp_path):
    with pytest.raises(DataError, match="codebook not found"):
        load_codebook(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable codebook"):
        load_codebook(tmp_path / "junk.npz")
    cfg = {"format": "vidcache-codebook", "format_version": 1, "patch": 4, "size": 16, "pixel_space": "rgb255"}
    np.savez(tmp_path / "bad.npz", centroids=np.zeros((8, 47), np.float32), config=np.array(json.dumps(cfg)))
    with pytest.raises(DataError, match="patch 4 needs 48"):
        load_codebook(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", centroids=np.zeros((8, 48), np.float32), config=np.array("{}"))
    with pytest.raises(DataError, match="not a vidcache codebook"):
        load_codebook(tmp_path / "other.npz")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_search_matches_cpu():
    cb_cpu = _codebook(k=1000, patch=4, size=16)
    cb_gpu = Codebook(cb_cpu.centroids, cb_cpu.config, device="cuda")
    frames = _frames(4, 32, 32, seed=2)
    assert (cb_gpu.encode_frames(frames) == cb_cpu.encode_frames(frames)).mean() > 0.999
    dec = CodeDecoder(cb_cpu).cuda()
    codes = torch.from_numpy(cb_cpu.encode_frames(frames)[None].astype(np.int32)).cuda()
    ref = decode_codes_np(codes.cpu().numpy(), cb_cpu.centroids_255(), 4).transpose(0, 4, 1, 2, 3)
    np.testing.assert_allclose(dec(codes).cpu().numpy(), ref, atol=1e-3)


# ---------------------------------------------------------------- end to end on real files

def _write_mp4(path, frames, fps=10):
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv444p"
        s.options = {"crf": "0"}
        for f in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return str(path)


def test_train_from_manifest_then_evaluate_store(tmp_path):
    from vidcache.cache.store import ArraySpec, Store
    from vidcache.codec import evaluate_store, train_codebook
    from vidcache.data.manifest import Manifest
    from vidcache.video.decode import open_video

    paths = [_write_mp4(tmp_path / f"v{i}.mp4", _frames(6, 24, 32, seed=10 + i)) for i in range(4)]
    (tmp_path / "empty.mp4").write_bytes(b"")
    paths.append(str(tmp_path / "empty.mp4"))
    man = Manifest(paths, [0, 1, 0, 1, 0], ["train", "train", "test", "test", "train"], ["a", "b"])
    cfg = CodecConfig(k=32, patch=4, size=16, niter=3, frames_per_video=3, max_patches=500, device="cpu")
    with pytest.warns(UserWarning, match="1 of 3 training videos could not be decoded"):
        cb = train_codebook(man, cfg, progress=False)
    assert cb.config["n_train_videos"] == 2 and cb.config["n_failed_videos"] == 1
    assert cb.config["train_digest"] == training_digest([(paths[0], [1, 3, 5]), (paths[1], [1, 3, 5])])

    # A code store as `extract codes` writes it (DESIGN.md §2), with fps resampling 10 -> 5.
    t_max = 3
    store = Store.create(tmp_path / "codes.zarr", "codes", man, {"codec": cb.config},
                         {"codes/frames": ArraySpec((t_max, 4, 4), "uint16", compress=True),
                          "videos/num_code_frames": ArraySpec((), "int32")}, videos_per_block=8)
    store.add_array("codes/codebook", cb.centroids_255(), cb.store_attrs(fps=5.0, max_frames=t_max))
    codes = np.zeros((5, t_max, 4, 4), np.uint16)
    counts, status, errors, direct = np.zeros(5, np.int32), [], [], []
    for i, p in enumerate(paths):
        try:
            with open_video(p) as v:
                idx = select_frames(v.num_frames, v.fps, 5.0, t_max)
                frames = cb.preprocess_frames(v.get_frames(idx.tolist()))
        except DataError as e:
            status.append(2), errors.append(str(e))
            continue
        codes[i, :len(idx)] = cb.encode_frames(frames, preprocess=False)
        counts[i] = len(idx)
        status.append(1), errors.append("")
        direct.append(psnr(frames, cb.decode(codes[i, :len(idx)])))
    store.write_block(0, {"codes/frames": codes, "videos/num_code_frames": counts}, status, errors)

    res = evaluate_store(tmp_path / "codes.zarr", split="test", preview=tmp_path / "prev.png", device="cpu")
    assert res["n_videos"] == 2 and res["held_out"]
    assert list(res["psnr_per_video"].values()) == pytest.approx(direct[2:4])
    assert res["compression_codes"] == pytest.approx(4 * 4 * 3 / 2)
    raw = 4 * 3 * 16 * 16 * 3  # 4 done videos x 3 frames x 16 x 16 x RGB
    assert res["raw_bytes_store"] == raw and res["compression_disk"] == pytest.approx(raw / res["store_bytes_on_disk"])
    assert (tmp_path / "prev.png").stat().st_size > 1000
    with pytest.raises(DataError, match="trained on split 'train'"):
        evaluate_store(tmp_path / "codes.zarr", split="train", device="cpu")
