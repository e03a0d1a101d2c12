"""Frame-accurate video decoding: torchcodec, decord or PyAV, one clean error for bad files.

    with open_video("clip.mp4") as video:       # backend "auto" | "torchcodec" | "decord" | "pyav"
        print(video.num_frames, video.fps, video.height, video.width)
        frames = video.get_frames([0, 8, 8, 3])                 # uint8 [4, H, W, 3] RGB, any order

Indices are frame numbers in decode order (0 .. num_frames-1); duplicates and unsorted lists are
allowed and each distinct frame is decoded once. Every failure a user can meet on a real dataset
(missing file, empty file, a non-video named .mp4, a truncated or corrupt file, a video without
frames) raises `DecodeError` with a `kind` and a one-line reason, so the extractor records it in the
store's `videos/error` and moves on.

Backends. torchcodec (the PyTorch project's decoder, on FFmpeg's shared libraries; CPU, or NVDEC
with `device="cuda"`, frames then stay on the GPU: `get_frames_tensor`) indexes the file at open
(`seek_mode="exact"`) and seeks to each frame asked for. "auto" uses it when it loads, else decord,
else PyAV; loading torchcodec can fail with an OSError rather than an ImportError (a CPU-only torch
build without libnvrtc, FFmpeg's libraries missing), so any failure to load it counts, and
`torchcodec_problem()` says why. decord (one thread per reader: parallelism comes from worker
processes) is fast at random access because it indexes the packets once at open. With backend
"auto" a file the first backend cannot open or fails on (open, first frame, or any later
`get_frames`) is retried once with PyAV. PyAV decodes
sequentially from the start to the largest requested index (or on from where the previous call
stopped) and keeps only the requested frames, which is exact for any codec and any frame rate; its
cost grows with the largest index, not with the number of frames asked for.

Hazards (see DESIGN.md): decord can block for ever inside `VideoReader(...)` and `get_batch` on some
files, and can crash the process on bad packets; PyAV can segfault on a damaged file. Nothing here
can bound those: run `open_video`, `get_frames`, `probe_video` and `iter_frames` / `read_all` in a
worker process with a wall-clock deadline, and create readers inside the workers, never before they
fork (a decord reader inherited across fork can deadlock).

Memory: a reader holds one decoder; `get_frames` returns one contiguous array of the distinct
frames asked for (T*H*W*3 bytes, then gathered), so ask for the frames of one video's clips at once
(see `sampling.frames_needed`) instead of the whole video. `iter_frames` streams and keeps at most
one chunk in memory.

Frames folders: a directory of JPEG/PNG images (a DAVIS sequence, `JPEGImages/480p/<seq>/`) is a
video whose frames are its images in name order (frame rate unknown: 0.0). All frames must have
one size.

Remote files: a path with a scheme other than file:// (s3://, gs://, http://, ...) is copied through
fsspec into a local temporary file, because decord needs a seekable local file; the copy is removed
when the reader closes.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from vidcache.errors import DataError

BACKENDS = ("auto", "torchcodec", "decord", "pyav")
DECODE_DEVICES = ("cpu", "cuda")
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")  # images that make a frames folder a video


def frame_files(folder: str | os.PathLike) -> list[Path]:
    """The frame images of a frames folder, in name order (hidden files skipped)."""
    return sorted(p for p in Path(folder).iterdir()
                  if p.suffix.lower() in FRAME_EXTENSIONS and not p.name.startswith("."))


def is_frames_folder(path: str | os.PathLike) -> bool:
    """True for a directory holding at least one frame image."""
    p = Path(path)
    return p.is_dir() and any(f.suffix.lower() in FRAME_EXTENSIONS for f in p.iterdir())

# Leading bytes of the containers we meet in video datasets: a file that starts like one of these
# but cannot be opened is truncated or damaged; anything else is reported as "not a video".
_CONTAINER_MAGIC = (
    (4, b"ftyp"),                    # mp4 / mov / m4v / 3gp
    (4, b"moov"), (4, b"mdat"), (4, b"free"), (4, b"wide"), (4, b"skip"),   # older QuickTime
    (0, b"\x1a\x45\xdf\xa3"),        # Matroska / WebM
    (0, b"RIFF"),                    # AVI
    (0, b"\x00\x00\x01\xba"), (0, b"\x00\x00\x01\xb3"),   # MPEG-PS / MPEG-1/2 video
    (0, b"\x47"),                    # MPEG-TS sync byte
    (0, b"FLV"), (0, b"OggS"), (0, b"0&\xb2u"),  # FLV, Ogg, ASF/WMV
)


def decode_problems(workers: int, decode_timeout: float, decoder: str, decode_device: str = "cpu") -> list[str]:
    """Validation of the decode options every extraction config shares (all problems at once)."""
    p = []
    if workers < 0:
        p.append(f"workers must be >= 0, got {workers}")
    if decode_timeout <= 0:
        p.append(f"decode_timeout must be > 0, got {decode_timeout}")
    if decoder not in BACKENDS:
        p.append(f"decoder must be one of {', '.join(BACKENDS)}, got {decoder!r}")
    elif decoder == "torchcodec" and torchcodec_problem() is not None:
        p.append(f"decoder torchcodec cannot be loaded ({torchcodec_problem()}); it needs "
                 f"`pip install 'vidcache[torchcodec]'` (a torchcodec built for your torch) and FFmpeg's shared "
                 f"libraries (`apt-get install ffmpeg`), or use --decoder pyav")
    elif decoder == "decord" and not decord_installed():
        p.append("decoder decord is not installed (it ships wheels for x86_64 only): pip install decord, "
                 "or use --decoder pyav")
    if decode_device not in DECODE_DEVICES:
        p.append(f"decode_device must be one of {', '.join(DECODE_DEVICES)}, got {decode_device!r}")
    elif decode_device == "cuda":
        if decoder != "torchcodec":
            p.append(f"decode_device cuda needs --decoder torchcodec (got {decoder!r})")
        if workers != 0:
            p.append("decode_device cuda decodes in the main process (CUDA does not survive fork): use --workers 0")
    return p


_TORCHCODEC_PROBLEM: list = []  # [reason or None], once per process (forked workers inherit it)


def torchcodec_problem() -> str | None:
    """Why torchcodec cannot decode here, in one line, or None when it loads."""
    if not _TORCHCODEC_PROBLEM:
        try:
            from torchcodec.decoders import VideoDecoder  # noqa: F401
            reason = None
        except Exception as e:  # ImportError, and OSError/RuntimeError for missing shared libraries
            reason = f"{type(e).__name__}: {_short(e)}"
        _TORCHCODEC_PROBLEM.append(reason)
    return _TORCHCODEC_PROBLEM[0]


_SAID: set = set()


def say_auto_fallback_once() -> None:
    """Log `auto_backend_note()` once per process (the extraction calls it before decoding starts)."""
    note = auto_backend_note()
    if note and note not in _SAID:
        _SAID.add(note)
        import logging

        logging.getLogger("vidcache").warning(note)


def auto_backend_note() -> str | None:
    """What "auto" falls back from and why (said once by the extraction), or None when it uses torchcodec.

    Also None when torchcodec is not installed at all: it is an extra (`vidcache[torchcodec]`), and
    "auto" then simply means the best installed decoder. Only an installed torchcodec that cannot load
    (FFmpeg's shared libraries missing, a build for another torch) is worth a warning.
    """
    reason = torchcodec_problem()
    if reason is None or not torchcodec_installed():
        return None
    order = "decord, then PyAV" if decord_installed() else "PyAV (decord is not installed)"
    return (f"decoder auto: torchcodec is not usable ({reason}); decoding with {order} "
            f"(for torchcodec: FFmpeg's shared libraries, `apt-get install ffmpeg`)")


def torchcodec_installed() -> bool:
    """Whether a torchcodec distribution is on the path, found without importing it."""
    import importlib.util

    return importlib.util.find_spec("torchcodec") is not None


def remote_filesystem_problems(paths) -> list[str]:
    """One line per URL protocol among `paths` whose fsspec filesystem cannot be loaded here.

    Checked before an extraction starts, so a manifest of s3:// videos without s3fs is one line up
    front rather than every video recorded as failed.
    """
    from vidcache.errors import missing_filesystem

    first: dict[str, str] = {}
    for path in paths:
        if _is_remote(str(path)):
            first.setdefault(str(path).split("://", 1)[0], str(path))
    if not first:
        return []
    import fsspec

    problems = []
    for proto, path in sorted(first.items()):
        try:
            fsspec.get_filesystem_class(proto)
        except ImportError as e:
            problems.append(missing_filesystem(path, e))
        except ValueError:
            problems.append(f"{path}: unknown URL protocol {proto}:// (fsspec knows no such filesystem)")
    return problems


def decord_installed() -> bool:
    """Whether decord can be imported (a base requirement on x86_64 only), found without importing it."""
    import importlib.util

    return importlib.util.find_spec("decord") is not None


class DecodeError(DataError):
    """A video that cannot be decoded; `kind` is one of KINDS and the message says why in one line."""

    KINDS = ("missing", "empty", "not_video", "corrupt", "no_frames", "unreadable")

    def __init__(self, path: str, kind: str, reason: str):
        self.path, self.kind, self.reason = str(path), kind, " ".join(str(reason).split())
        super().__init__(f"cannot decode {self.path}: {self.reason}")

    def __reduce__(self):  # survive the trip back from a worker process
        return type(self), (self.path, self.kind, self.reason)


def _looks_like_container(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    return any(head[off:off + len(magic)] == magic for off, magic in _CONTAINER_MAGIC)


def _fail_open(path: str, display: str, err: BaseException | None, backend: str) -> DecodeError:
    """Turn a backend's refusal to open a file into the DecodeError a user can act on."""
    detail = f" ({backend}: {_short(err)})" if err is not None else ""
    if err is not None and "video stream" in str(err):  # decord's words for an audio-only file
        return DecodeError(display, "not_video", f"file has no video stream{detail}")
    if _looks_like_container(path):
        return DecodeError(display, "corrupt", f"truncated or corrupt video file{detail}")
    return DecodeError(display, "not_video", f"not a video file (unknown container format){detail}")


def _short(err: BaseException | None) -> str:
    text = " ".join(str(err).split()) if err is not None else ""
    return (text[:160] + "...") if len(text) > 160 else (text or type(err).__name__)


def _is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _localize(path: str) -> tuple[str, str | None]:
    """(local path, temp file to delete or None). Checks existence and size before any decoder runs."""
    if path.startswith("file://"):
        path = path[len("file://"):]
    if not _is_remote(path):
        if not os.path.exists(path):
            raise DecodeError(path, "missing", "file not found")
        if os.path.isdir(path):
            if not is_frames_folder(path):
                raise DecodeError(path, "not_video", "is a directory without frame images (.jpg/.png), "
                                                     "not a video file")
            return path, None
        if os.path.getsize(path) == 0:
            raise DecodeError(path, "empty", "file is empty (0 bytes)")
        return path, None
    import fsspec

    suffix = Path(path.split("?")[0]).suffix
    fd, tmp = tempfile.mkstemp(prefix="vidcache-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as dst, fsspec.open(path, "rb") as src:
            shutil.copyfileobj(src, dst, length=1 << 22)
    except FileNotFoundError:
        os.unlink(tmp)
        raise DecodeError(path, "missing", "file not found") from None
    except Exception as e:  # network, permissions, unknown protocol
        os.unlink(tmp)
        raise DecodeError(path, "unreadable", f"cannot fetch through fsspec: {_short(e)}") from None
    if os.path.getsize(tmp) == 0:
        os.unlink(tmp)
        raise DecodeError(path, "empty", "file is empty (0 bytes)")
    return tmp, tmp


def _as_index_array(indices: Sequence[int], num_frames: int, display: str) -> np.ndarray:
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= num_frames):
        raise IndexError(f"frame index out of range for {display}: asked for "
                         f"[{idx.min()}, {idx.max()}], video has {num_frames} frames")
    return idx


class _TorchCodecImpl:
    name = "torchcodec"

    def __init__(self, path: str, display: str, device: str = "cpu"):
        if torchcodec_problem() is not None:
            raise ImportError(f"torchcodec cannot be loaded: {torchcodec_problem()}")
        from torchcodec.decoders import VideoDecoder

        self.display, self.device = display, device
        try:
            # "exact" scans the file once at open: true frame count, and every seek lands on the frame.
            self.dec = VideoDecoder(path, device=device, seek_mode="exact", dimension_order="NHWC",
                                    num_ffmpeg_threads=1)
            meta = self.dec.metadata
            self.num_frames = int(meta.num_frames or 0)
        except Exception as e:
            raise _fail_open(path, display, e, "torchcodec") from None
        if self.num_frames <= 0:
            self.close()
            raise DecodeError(display, "no_frames", "video has zero frames")
        self.fps = float(meta.average_fps or 0.0)
        self.height, self.width = int(meta.height or 0), int(meta.width or 0)
        try:
            first = self.dec.get_frame_at(0).data
        except Exception as e:
            self.close()
            raise DecodeError(display, "corrupt", f"first frame does not decode (torchcodec: {_short(e)})") from None
        self.height, self.width = int(first.shape[0]), int(first.shape[1])

    def read_tensor(self, unique_sorted: np.ndarray):
        """uint8 torch tensor [N, H, W, 3] on the decoder's device."""
        try:
            return self.dec.get_frames_at(unique_sorted.tolist()).data
        except Exception as e:
            raise DecodeError(self.display, "corrupt", f"decoding failed (torchcodec: {_short(e)})") from None

    def read(self, unique_sorted: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self.read_tensor(unique_sorted).cpu().numpy(), dtype=np.uint8)

    def close(self):
        self.dec = None


class _DecordImpl:
    name = "decord"

    def __init__(self, path: str, display: str):
        import decord

        self.display = display
        try:
            self.vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
        except Exception as e:  # decord raises DECORDError/RuntimeError for anything it cannot read
            raise _fail_open(path, display, e, "decord") from None
        self.num_frames = len(self.vr)
        if self.num_frames <= 0:
            self.close()
            raise DecodeError(display, "no_frames", "video has zero frames")
        try:
            self.fps = float(self.vr.get_avg_fps() or 0.0)
            first = _to_numpy(self.vr[0])
            self.vr.seek(0)
        except Exception as e:
            self.close()
            raise DecodeError(display, "corrupt", f"first frame does not decode (decord: {_short(e)})") from None
        self.height, self.width = int(first.shape[0]), int(first.shape[1])

    def read(self, unique_sorted: np.ndarray) -> np.ndarray:
        try:
            out = _to_numpy(self.vr.get_batch(unique_sorted.tolist()))
        except Exception as e:
            raise DecodeError(self.display, "corrupt", f"decoding failed (decord: {_short(e)})") from None
        return np.ascontiguousarray(out, dtype=np.uint8)

    def close(self):
        # decord keeps native buffers alive while a Python reference exists; drop it explicitly.
        vr = getattr(self, "vr", None)
        self.vr = None
        del vr


def _to_numpy(x) -> np.ndarray:
    """decord returns its NDArray, or a torch/tf tensor when another module set a global bridge."""
    if hasattr(x, "asnumpy"):
        return x.asnumpy()
    if hasattr(x, "numpy"):
        return x.numpy()
    return np.asarray(x)


class _PyAVImpl:
    name = "pyav"

    def __init__(self, path: str, display: str):
        import av

        self.path, self.display = path, display
        self._av = av
        self._container = None
        try:
            self._open()
        except DecodeError:
            self.close()
            raise
        except Exception as e:  # av.error.FFmpegError subclasses, OSError, ...
            self.close()
            raise _fail_open(path, display, e, "pyav") from None
        stream = self._stream
        self.height, self.width = int(stream.codec_context.height), int(stream.codec_context.width)
        self.fps = _stream_fps(stream)
        declared = int(stream.frames or 0)
        # Containers such as WebM/MKV do not store a frame count; counting by decoding is the only
        # number that matches what get_frames can deliver.
        self.num_frames = declared if declared > 0 else self._count_frames()
        if self.num_frames <= 0:
            self.close()
            raise DecodeError(display, "no_frames", "video has zero frames")
        if self.height <= 0 or self.width <= 0:
            first = self.read(np.array([0]))
            self.height, self.width = int(first.shape[1]), int(first.shape[2])

    def _open(self):
        self.close()
        self._container = self._av.open(self.path, mode="r")
        if not self._container.streams.video:
            raise DecodeError(self.display, "not_video", "file has no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_count = 1
        self._frames = self._container.decode(self._stream)
        self._pos = 0  # index of the next frame self._frames yields

    def _count_frames(self) -> int:
        n = 0
        try:
            for _ in self._frames:
                n += 1
        except self._av.error.FFmpegError:
            pass  # a damaged tail: count what decodes
        self._open()
        return n

    def read(self, unique_sorted: np.ndarray) -> np.ndarray:
        if unique_sorted.size == 0:
            return np.zeros((0, self.height, self.width, 3), np.uint8)
        if unique_sorted[0] < self._pos:  # going backwards: restart the stream
            try:
                self._open()
            except Exception as e:
                raise DecodeError(self.display, "corrupt", f"cannot reopen (pyav: {_short(e)})") from None
        out = None
        k, last = 0, int(unique_sorted[-1])
        try:
            while self._pos <= last:
                frame = next(self._frames, None)
                if frame is None:
                    raise DecodeError(self.display, "corrupt",
                                      f"truncated: stream ended after {self._pos} of "
                                      f"{self.num_frames} frames")
                if self._pos == unique_sorted[k]:
                    rgb = frame.to_ndarray(format="rgb24")
                    if out is None:
                        out = np.empty((unique_sorted.size, *rgb.shape), np.uint8)
                    out[k] = rgb
                    k += 1
                self._pos += 1
        except DecodeError:
            raise
        except Exception as e:
            raise DecodeError(self.display, "corrupt", f"decoding failed at frame {self._pos} "
                              f"(pyav: {_short(e)})") from None
        return out

    def close(self):
        container, self._container = getattr(self, "_container", None), None
        self._frames = None
        if container is not None:
            try:
                container.close()
            except Exception:
                pass


class _FramesImpl:
    """A folder of frame images read as a video (PIL; the frame rate is unknown)."""

    name = "frames"

    def __init__(self, path: str, display: str):
        self.display = display
        self.files = frame_files(path)
        self.num_frames = len(self.files)
        self.fps = 0.0
        first = self._load(0)
        self.height, self.width = int(first.shape[0]), int(first.shape[1])

    def _load(self, i: int) -> np.ndarray:
        from PIL import Image

        try:
            with Image.open(self.files[i]) as im:
                return np.asarray(im.convert("RGB"), dtype=np.uint8)
        except OSError as e:
            raise DecodeError(self.display, "corrupt", f"frame {self.files[i].name} does not decode ({_short(e)})") from None

    def read(self, unique_sorted: np.ndarray) -> np.ndarray:
        out = np.empty((unique_sorted.size, self.height, self.width, 3), np.uint8)
        for k, i in enumerate(unique_sorted.tolist()):
            frame = self._load(i)
            if frame.shape[:2] != (self.height, self.width):
                raise DecodeError(self.display, "corrupt", f"frame {self.files[i].name} is {frame.shape[1]}x"
                                  f"{frame.shape[0]}, the first is {self.width}x{self.height}")
            out[k] = frame
        return out

    def close(self):
        pass


def _stream_fps(stream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            value = float(Fraction(rate))
            if math.isfinite(value) and value > 0:
                return value
    if stream.frames and stream.duration and stream.time_base:
        return float(stream.frames / (stream.duration * stream.time_base))
    return 0.0  # unknown; callers that need it (fps resampling) say so


class VideoReader:
    """An open video: `num_frames`, `fps` (0.0 when the file does not say), `height`, `width`.

    Use `open_video` to make one; close it (or use `with`) to release the decoder and any temp copy.
    """

    def __init__(self, path: str, backend: str = "auto", device: str = "cpu"):
        if backend not in BACKENDS:
            raise ValueError(f"unknown decode backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if device.split(":")[0] not in DECODE_DEVICES:
            raise ValueError(f"unknown decode device {device!r}; choose cpu, cuda or cuda:N")
        if device != "cpu" and backend != "torchcodec":
            raise ValueError(f"decoding on {device} needs backend 'torchcodec', not {backend!r}")
        self.path = str(path)
        self._requested = backend
        self.device = device
        self._local, self._tmp = _localize(self.path)
        self._impl = None
        try:
            self._impl = self._open_impl()
        except BaseException:
            self._remove_tmp()
            raise
        self.num_frames = int(self._impl.num_frames)
        self.fps = float(self._impl.fps)
        self.height, self.width = int(self._impl.height), int(self._impl.width)

    @property
    def backend(self) -> str:
        """The backend actually in use ("torchcodec", "decord" or "pyav"; "auto" may have fallen back)."""
        return self._impl.name if self._impl is not None else "closed"

    def _open_impl(self):
        if os.path.isdir(self._local):
            return _FramesImpl(self._local, self.path)
        if self._requested == "pyav":
            return _PyAVImpl(self._local, self.path)
        if self._requested == "decord":
            return _DecordImpl(self._local, self.path)
        if self._requested == "torchcodec":
            return _TorchCodecImpl(self._local, self.path, self.device)
        first = _TorchCodecImpl if torchcodec_problem() is None else _DecordImpl
        try:
            return first(self._local, self.path)
        except (ImportError, DecodeError):
            # the first backend missing, or it refused the file: PyAV decides (and gives the final reason).
            return _PyAVImpl(self._local, self.path)

    def get_frames_tensor(self, indices: Sequence[int]):
        """uint8 torch tensor [len(indices), H, W, 3] on the reader's device (torchcodec on CUDA:
        decoded by NVDEC, never copied to the host); same frames and order as `get_frames`."""
        import torch

        if self._impl is None:
            raise ValueError(f"video {self.path} is closed")
        if not isinstance(self._impl, _TorchCodecImpl):
            return torch.from_numpy(self.get_frames(indices))
        idx = _as_index_array(indices, self.num_frames, self.path)
        if idx.size == 0:
            return torch.zeros((0, self.height, self.width, 3), dtype=torch.uint8, device=self.device)
        unique, inverse = np.unique(idx, return_inverse=True)
        frames = self._impl.read_tensor(unique)
        if tuple(frames.shape[1:3]) != (self.height, self.width):
            raise DecodeError(self.path, "corrupt", f"frame size changed mid-stream to "
                              f"{frames.shape[2]}x{frames.shape[1]} from {self.width}x{self.height}")
        if np.array_equal(unique, idx):
            return frames
        return frames[torch.as_tensor(inverse.reshape(-1), device=frames.device)]

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        """uint8 [len(indices), H, W, 3] RGB frames, in the order asked (duplicates allowed)."""
        if self._impl is None:
            raise ValueError(f"video {self.path} is closed")
        idx = _as_index_array(indices, self.num_frames, self.path)
        if idx.size == 0:
            return np.zeros((0, self.height, self.width, 3), np.uint8)
        unique, inverse = np.unique(idx, return_inverse=True)
        try:
            frames = self._impl.read(unique)
        except DecodeError:
            if not (self._requested == "auto" and self._impl.name != "pyav"):
                raise
            # the first backend failed mid-file: one retry with PyAV, which is slower but exact.
            self._impl.close()
            self._impl = _PyAVImpl(self._local, self.path)
            frames = self._impl.read(unique)
        if frames.shape[1:3] != (self.height, self.width):
            raise DecodeError(self.path, "corrupt", f"frame size changed mid-stream to "
                              f"{frames.shape[2]}x{frames.shape[1]} from {self.width}x{self.height}")
        return frames if np.array_equal(unique, idx) else frames[inverse.reshape(-1)]

    def close(self) -> None:
        if self._impl is not None:
            self._impl.close()
            self._impl = None
        self._remove_tmp()

    def _remove_tmp(self):
        if self._tmp is not None:
            try:
                os.unlink(self._tmp)
            except OSError:
                pass
            self._tmp = None

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __len__(self) -> int:
        return self.num_frames

    def __repr__(self) -> str:
        return (f"VideoReader({self.path!r}, backend={self.backend!r}, frames={self.num_frames}, "
                f"fps={self.fps:.3f}, size={self.width}x{self.height})")


def open_video(path: str | os.PathLike, backend: str = "auto", device: str = "cpu") -> VideoReader:
    """Open a video for frame-accurate reads; raises DecodeError (with `.kind`) when it cannot.

    `device="cuda"` (backend "torchcodec" only) decodes on the GPU. May block for ever on some files
    (see the module notes): call it in a worker with a deadline when reading a dataset.
    """
    return VideoReader(os.fspath(path), backend=backend, device=device)


def probe_video(path: str | os.PathLike, backend: str = "auto") -> dict:
    """{"num_frames", "fps", "height", "width"} of a video (decodes at most the first frame, or
    the whole stream with PyAV when the container stores no frame count)."""
    with open_video(path, backend) as video:
        return {"num_frames": video.num_frames, "fps": video.fps,
                "height": video.height, "width": video.width}


def resample_indices(num_frames: int, src_fps: float, fps: float | None = None,
                     max_frames: int | None = None) -> np.ndarray:
    """Frame indices that play a `src_fps` video at `fps` (nearest earlier frame; frames repeat
    when `fps` > `src_fps`), cut at `max_frames`. `fps=None` keeps every frame."""
    if fps is None:
        idx = np.arange(num_frames, dtype=np.int64)
    else:
        if not (fps > 0):
            raise ValueError(f"target fps must be > 0, got {fps}")
        if not (src_fps > 0):
            raise ValueError("the video does not state its frame rate, so it cannot be resampled "
                             "to a target fps; pass fps=None to read every frame")
        step = src_fps / fps
        n_out = int(math.floor((num_frames - 1) / step + 1e-9)) + 1 if num_frames > 0 else 0
        # floor(j * step) with a small guard so that exact ratios (30 -> 15) never round down a frame
        idx = np.floor(np.arange(n_out) * step + 1e-6).astype(np.int64)
        idx = idx[idx < num_frames]
    if max_frames is not None:
        idx = idx[:max(0, int(max_frames))]
    return idx


def iter_frames(path: str | os.PathLike, fps: float | None = None, max_frames: int | None = None,
                backend: str = "auto", chunk: int = 32) -> Iterator[np.ndarray]:
    """Yield uint8 [H, W, 3] RGB frames resampled to `fps` (None: every frame), at most `max_frames`.

    Decodes only up to the last frame it yields and holds one chunk of frames at a time.
    """
    with open_video(path, backend) as video:
        if fps is not None and not video.fps > 0:
            _no_fps(video)
        idx = resample_indices(video.num_frames, video.fps, fps, max_frames)
        for start in range(0, len(idx), chunk):
            yield from video.get_frames(idx[start:start + chunk])


def _no_fps(video: VideoReader):
    raise DecodeError(video.path, "corrupt", "video does not state its frame rate, so it cannot be "
                      "resampled to a target fps; read it with fps=None")


def read_all(path: str | os.PathLike, max_frames: int | None = None, fps: float | None = None,
             backend: str = "auto") -> np.ndarray:
    """uint8 [T, H, W, 3]: the whole video (or its first `max_frames` after resampling to `fps`)."""
    with open_video(path, backend) as video:
        if fps is not None and not video.fps > 0:
            _no_fps(video)
        idx = resample_indices(video.num_frames, video.fps, fps, max_frames)
        if idx.size == 0:
            return np.zeros((0, video.height, video.width, 3), np.uint8)
        return video.get_frames(idx)
