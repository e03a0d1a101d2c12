"""Decoding: frame-accurate reads with both backends, fallback, and one clean error per bad file."""

import os
import pickle

import av
import numpy as np
import pytest

from vidcache.errors import DataError
from vidcache.video import decode
from vidcache.video.decode import DecodeError, iter_frames, open_video, probe_video, read_all, resample_indices

W, H, N = 64, 48, 30
# torchcodec runs where it loads (FFmpeg's shared libraries present); the reason is shown otherwise.
TC = pytest.param("torchcodec", marks=pytest.mark.skipif(decode.torchcodec_problem() is not None,
                                                         reason=f"torchcodec: {decode.torchcodec_problem()}"))


@pytest.fixture
def no_torchcodec(monkeypatch):
    """As on a machine where torchcodec does not load: "auto" starts with decord."""
    monkeypatch.setattr(decode, "_TORCHCODEC_PROBLEM", ["OSError: libnvrtc.so.13: cannot open shared object file"])


def level(i: int) -> int:
    """Grey level that encodes frame i (steps of 7 survive the codec's rounding)."""
    return 16 + 7 * i


def make_video(path, n=N, codec="libx264", fps=25, faststart=False, w=W, h=H):
    """A video whose frame i is grey `level(i)` with a pure red top-left quadrant."""
    c = av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {})
    s = c.add_stream(codec, rate=fps)
    s.width, s.height, s.pix_fmt = w, h, "yuv420p"
    if codec == "libx264":
        s.options = {"crf": "0", "g": "8", "bf": "2"}  # lossless, short GOP, B-frames reorder output
    for i in range(n):
        a = np.full((h, w, 3), level(i), np.uint8)
        a[: h // 2, : w // 2] = (250, 0, 0)
        for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    return str(path)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    return {"mp4": make_video(d / "a.mp4"),
            "webm": make_video(d / "b.webm", n=20, codec="libvpx-vp9"),  # no frame count in the header
            "faststart": make_video(d / "c.mp4", faststart=True)}


def grey(frames: np.ndarray) -> np.ndarray:
    """Decoded level of each frame, read from the bottom-right quadrant."""
    return frames[:, -H // 4, -W // 4].astype(int)


@pytest.mark.parametrize("backend", ["decord", "pyav", "auto", TC])
def test_frame_accurate_by_index(videos, backend):
    idx = [5, 3, 3, 29, 0, 17, 5]
    with open_video(videos["mp4"], backend) as v:
        assert (v.num_frames, v.height, v.width) == (N, H, W)
        assert v.fps == pytest.approx(25.0)
        frames = v.get_frames(idx)
        assert frames.dtype == np.uint8 and frames.shape == (len(idx), H, W, 3)
        np.testing.assert_allclose(grey(frames), [[level(i)] * 3 for i in idx], atol=3)
        # RGB order: the top-left quadrant is red
        np.testing.assert_allclose(frames[:, 2, 2].astype(int), [[250, 0, 0]] * len(idx), atol=6)
        # a second call going backwards (PyAV restarts its stream) and forwards again
        np.testing.assert_allclose(grey(v.get_frames([1, 28])), [[level(1)] * 3, [level(28)] * 3], atol=3)


@pytest.mark.parametrize("backend", ["decord", "pyav", TC])
def test_webm_counts_frames_without_header_count(videos, backend):
    with open_video(videos["webm"], backend) as v:
        assert v.num_frames == 20
        np.testing.assert_allclose(grey(v.get_frames([19, 0, 10]))[:, 0], [level(19), level(0), level(10)],
                                   atol=6)


def test_backends_agree(videos):
    with open_video(videos["mp4"], "decord") as a, open_video(videos["mp4"], "pyav") as b:
        idx = [0, 7, 8, 16, 29]
        np.testing.assert_array_equal(a.get_frames(idx), b.get_frames(idx))


def test_probe_video(videos):
    info = probe_video(videos["mp4"])
    assert info == {"num_frames": N, "fps": pytest.approx(25.0), "height": H, "width": W}


def test_auto_falls_back_when_decord_cannot_open(videos, monkeypatch, no_torchcodec):
    def refuse(self, path, display):
        raise DecodeError(display, "corrupt", "simulated")

    monkeypatch.setattr(decode._DecordImpl, "__init__", refuse)
    with open_video(videos["mp4"]) as v:
        assert v.backend == "pyav"
        assert grey(v.get_frames([12]))[0, 0] == pytest.approx(level(12), abs=3)
    with pytest.raises(DecodeError, match="simulated"):
        open_video(videos["mp4"], "decord")


def test_auto_falls_back_when_decord_is_missing(videos, monkeypatch, no_torchcodec):
    monkeypatch.setitem(__import__("sys").modules, "decord", None)  # import decord -> ImportError
    with open_video(videos["mp4"]) as v:
        assert v.backend == "pyav"


def test_auto_retries_with_pyav_when_decord_fails_mid_file(videos, monkeypatch, no_torchcodec):
    calls = []

    def broken(self, unique):
        calls.append(list(unique))
        raise DecodeError(self.display, "corrupt", "simulated get_batch failure")

    monkeypatch.setattr(decode._DecordImpl, "read", broken)
    with open_video(videos["mp4"]) as v:
        assert v.backend == "decord"
        frames = v.get_frames([9, 2])
        assert v.backend == "pyav" and calls == [[2, 9]]
        np.testing.assert_allclose(grey(frames)[:, 0], [level(9), level(2)], atol=3)
    with open_video(videos["mp4"], "decord") as v:  # an explicit backend never falls back
        with pytest.raises(DecodeError, match="simulated"):
            v.get_frames([1])


@pytest.mark.parametrize("backend", ["decord", "pyav", "auto", TC])
def test_failure_modes_each_have_a_reason(tmp_path, videos, backend):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "text.mp4"
    text.write_text("this is a caption file, not a video\n" * 20)
    data = open(videos["mp4"], "rb").read()
    truncated = tmp_path / "trunc.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    cases = [(tmp_path / "missing.mp4", "missing", "not found"), (empty, "empty", "0 bytes"),
             (text, "not_video", "not a video"), (truncated, "corrupt", "truncated or corrupt")]
    for path, kind, words in cases:
        with pytest.raises(DecodeError) as err:
            open_video(path, backend)
        assert err.value.kind == kind and words in str(err.value)
        assert isinstance(err.value, DataError) and "\n" not in str(err.value)
        assert str(path) in str(err.value)


def test_truncated_stream_with_header_fails_on_read(tmp_path, videos):
    # moov first (faststart): the header promises 30 frames but half the data is gone
    data = open(videos["faststart"], "rb").read()
    path = tmp_path / "half.mp4"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DecodeError) as err:
        with open_video(path, "pyav") as v:
            v.get_frames([v.num_frames - 1])
    assert err.value.kind == "corrupt"


def test_zero_frames_and_no_video_stream(tmp_path):
    zero = tmp_path / "zero.avi"
    c = av.open(str(zero), "w")
    s = c.add_stream("mpeg4", rate=25)
    s.width, s.height, s.pix_fmt = W, H, "yuv420p"
    c.start_encoding()
    c.close()
    with pytest.raises(DecodeError) as err:
        open_video(zero)
    assert err.value.kind == "no_frames" and "zero frames" in str(err.value)

    audio = tmp_path / "sound.m4a"
    c = av.open(str(audio), "w")
    s = c.add_stream("aac", rate=16000)
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
    frame.sample_rate = 16000
    for p in [*s.encode(frame), *s.encode()]:
        c.mux(p)
    c.close()
    for backend in ("auto", "decord"):
        with pytest.raises(DecodeError) as err:
            open_video(audio, backend)
        assert err.value.kind == "not_video" and "no video stream" in str(err.value)


def test_decode_error_pickles_for_worker_processes():
    err = pickle.loads(pickle.dumps(DecodeError("x.mp4", "corrupt", "truncated or corrupt video file")))
    assert (err.path, err.kind, str(err)) == ("x.mp4", "corrupt",
                                              "cannot decode x.mp4: truncated or corrupt video file")


def test_bad_arguments(videos):
    with pytest.raises(ValueError, match="unknown decode backend"):
        open_video(videos["mp4"], "ffmpeg")
    v = open_video(videos["mp4"])
    assert v.get_frames([]).shape == (0, H, W, 3)
    with pytest.raises(IndexError, match="30 frames"):
        v.get_frames([30])
    with pytest.raises(IndexError):
        v.get_frames([-1])
    v.close()
    with pytest.raises(ValueError, match="closed"):
        v.get_frames([0])


def test_resample_indices_golden():
    assert resample_indices(10, 30, 15).tolist() == [0, 2, 4, 6, 8]
    assert resample_indices(5, 10, 25).tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 4]  # upsampling repeats
    assert resample_indices(30, 25, 12.5, max_frames=4).tolist() == [0, 2, 4, 6]
    assert resample_indices(7, 25).tolist() == list(range(7))
    assert resample_indices(100, 29.97, 10)[:4].tolist() == [0, 2, 5, 8]  # floor(j * 2.997)
    with pytest.raises(ValueError, match="frame rate"):
        resample_indices(10, 0.0, 5)


@pytest.mark.parametrize("backend", ["decord", "pyav", TC])
def test_read_all_and_iter_frames_resample(videos, backend):
    frames = read_all(videos["mp4"], fps=12.5, backend=backend)
    assert frames.shape == (15, H, W, 3)
    np.testing.assert_allclose(grey(frames)[:, 0], [level(i) for i in range(0, 30, 2)], atol=3)
    first = read_all(videos["mp4"], max_frames=4, backend=backend)
    np.testing.assert_allclose(grey(first)[:, 0], [level(i) for i in range(4)], atol=3)
    streamed = np.stack(list(iter_frames(videos["mp4"], fps=12.5, backend=backend, chunk=4)))
    np.testing.assert_array_equal(streamed, frames)


def test_pyav_stops_decoding_at_the_last_needed_frame(videos, monkeypatch):
    seen = []
    real = decode._PyAVImpl.read

    def spy(self, unique):
        out = real(self, unique)
        seen.append(self._pos)
        return out

    monkeypatch.setattr(decode._PyAVImpl, "read", spy)
    list(iter_frames(videos["mp4"], max_frames=6, backend="pyav", chunk=4))
    assert seen == [4, 6]  # decoded frames 0..5 only, in one forward pass


def test_file_and_fsspec_urls(videos):
    fsspec = pytest.importorskip("fsspec")
    with open_video("file://" + os.path.abspath(videos["mp4"])) as v:
        assert v.num_frames == N
    fs = fsspec.filesystem("memory")
    fs.pipe("/vidcache-test/a.mp4", open(videos["mp4"], "rb").read())
    try:
        v = open_video("memory://vidcache-test/a.mp4")
        tmp = v._tmp
        assert os.path.exists(tmp)
        assert grey(v.get_frames([21]))[0, 0] == pytest.approx(level(21), abs=3)
        v.close()
        assert not os.path.exists(tmp)  # the local copy goes with the reader
        with pytest.raises(DecodeError) as err:
            open_video("memory://vidcache-test/nothing.mp4")
        assert err.value.kind == "missing"
    finally:
        fs.rm("/vidcache-test", recursive=True)
