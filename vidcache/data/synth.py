"""A synthetic video corpus that a single frame cannot solve.

Every video shows one textured object over a random background with light camera noise. Classes
come in pairs, taken in a fixed order:

- *motion* classes (`motion_left` / `motion_right`, `up` / `down`, `cw` / `ccw`, `grow` / `shrink`,
  `fast` / `slow`) share one appearance family (an irregular "blob" with a smooth random colour
  texture) and differ only in how it moves. Every frame has the same distribution in both classes
  of a pair: translation runs on a torus (the object wraps around the borders) from a uniform
  start, rotation starts at a uniform random angle, and growing/shrinking runs through a periodic
  log-size cycle from a uniform phase, fading the object out before it wraps so the reset is
  invisible. Only the order of frames tells the classes apart.
- *appearance* classes (`appearance_disc` / `square`, `stripes` / `checker`, `triangle` / `cross`)
  are separable from one frame and move at random (drift, spin), so motion carries no label.

Comparing probe accuracy on the two kinds contrasts temporal understanding with frame statistics.
Beside each video the generator writes what it knows exactly (`ground_truth`): per-frame instance
masks as indexed PNGs in DAVIS layout (`annotations/<class>/<index>/<frame>.png`, object id 1 where
the object covers at least half a pixel, 0 elsewhere) and the forward optical flow
(`flow/<class>/<index>.npz`, `flow` float16 [T-1, H, W, 2]: the (dx, dy) in pixels that takes each
object pixel of frame t to where that point of the object is at frame t+1; 0 on the background).
Files are real H.264 mp4s (libx264, yuv420p) encoded single-threaded, so one seed gives
byte-identical files on one software stack.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from vidcache.config import check, to_dict
from vidcache.data.config import CLASS_NAMES, CLASS_PAIRS, SynthConfig  # noqa: F401  (re-exported)
from vidcache.data.importers import stratified_split
from vidcache.data.manifest import Manifest
from vidcache.errors import DataError


def class_kind(name: str) -> str:
    """'motion' or 'appearance', from the class name's prefix."""
    kind = name.split("_", 1)[0]
    if kind not in ("motion", "appearance"):
        raise DataError(f"class {name!r} is not a synthetic class (expected a motion_ or appearance_ prefix)")
    return kind


def synth_classes(k: int) -> list[str]:
    """The first k classes of the fixed order (pairs stay together when k is even)."""
    if not 2 <= k <= len(CLASS_NAMES):
        raise DataError(f"the synthetic corpus has 2..{len(CLASS_NAMES)} classes, got {k}")
    return list(CLASS_NAMES[:k])


# ----------------------------------------------------------------------------------------------
# drawing: vectorised over the frames and pixels (no per-pixel Python loops)


def _upsample(grid: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear lookup of a [g, g, C] grid at coordinates u, v in [-1, 1] (clamped) -> [..., C]."""
    g, _, ch = grid.shape
    flat = np.ascontiguousarray(grid.reshape(g * g, ch).T, dtype=np.float32)  # [C, g*g]
    x = np.clip((u + 1) * (0.5 * (g - 1)), 0, g - 1 - 1e-3).astype(np.float32)
    y = np.clip((v + 1) * (0.5 * (g - 1)), 0, g - 1 - 1e-3).astype(np.float32)
    x0, y0 = x.astype(np.intp), y.astype(np.intp)
    fx, fy = x - x0, y - y0
    i00 = y0 * g + x0
    # Flat 1-D gathers per channel are several times faster than fancy indexing a [g, g, C] grid.
    out = np.empty(u.shape + (ch,), dtype=np.float32)
    for c in range(ch):
        f = flat[c]
        top = f.take(i00) * (1 - fx) + f.take(i00 + 1) * fx
        bot = f.take(i00 + g) * (1 - fx) + f.take(i00 + g + 1) * fx
        out[..., c] = top * (1 - fy) + bot * fy
    return out


def _background(rng: np.random.Generator, s: int) -> np.ndarray:
    """A static scene: a linear colour gradient, low-frequency blotches and fine grain. [S, S, 3]."""
    c0, c1 = rng.uniform(20, 235, 3), rng.uniform(20, 235, 3)
    a = rng.uniform(0, 2 * np.pi)
    lin = np.linspace(-1, 1, s, dtype=np.float32)
    v, u = np.meshgrid(lin, lin, indexing="ij")
    t = np.clip(0.5 + 0.35 * (np.cos(a) * u + np.sin(a) * v), 0, 1)[..., None]
    bg = c0 * (1 - t) + c1 * t
    bg = bg + _upsample(rng.normal(0, 18, (5, 5, 3)), u, v)
    bg = bg + rng.normal(0, 5, (s, s, 3))
    return bg.astype(np.float32)


def _shape_distance(shape: str, u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A distance in object units that is < 1 inside the shape (object radius is 1)."""
    if shape == "disc":
        return np.sqrt(u * u + v * v) / 0.9
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) / 0.72
    if shape == "triangle":  # equilateral, circumradius 1
        d = np.full(u.shape, -np.inf, dtype=np.float32)
        for ang in (-np.pi / 2, np.pi / 6, 5 * np.pi / 6):
            d = np.maximum(d, np.cos(ang) * u + np.sin(ang) * v)
        return d / 0.5
    if shape == "cross":
        w = 0.32
        return np.minimum(np.maximum(np.abs(u) / w, np.abs(v) / 0.95), np.maximum(np.abs(u) / 0.95, np.abs(v) / w))
    if shape == "blob":  # a radius with random low harmonics: no rotational symmetry
        amp = rng.uniform(0.08, 0.16, 3).astype(np.float32)
        phase = rng.uniform(0, 2 * np.pi, 3).astype(np.float32)
        phi = np.arctan2(v, u)
        r = 1 + sum(amp[i] * np.cos((i + 2) * phi + phase[i]) for i in range(3))
        return np.sqrt(u * u + v * v) * (1 + amp.sum()) / r
    raise ValueError(shape)


def _fill(pattern: str, u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Object colours at object coordinates, [..., 3] in 0..255."""
    if pattern == "smooth":
        return _upsample(rng.uniform(0, 255, (4, 4, 3)), u, v)
    ca, cb = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    while np.abs(ca - cb).sum() < 150:  # two stripe colours must be told apart after encoding
        cb = rng.uniform(0, 255, 3)
    ca, cb = ca.astype(np.float32), cb.astype(np.float32)
    freq = float(2 * np.pi / rng.uniform(0.4, 0.6))
    if pattern == "stripes":
        a = float(rng.uniform(0, np.pi))
        w = np.sin(freq * (np.cos(a) * u + np.sin(a) * v))
    elif pattern == "checker":
        w = np.sin(freq * u) * np.sin(freq * v)
    else:
        raise ValueError(pattern)
    w = np.clip(w * 4 + 0.5, 0, 1)[..., None]  # a soft edge, about a pixel wide at small sizes
    return ca * w + cb * (1 - w)


@dataclass
class _Path:
    """Where the object is at each frame: centre (pixels, on a torus), angle, radius, opacity."""

    cx: np.ndarray
    cy: np.ndarray
    angle: np.ndarray
    radius: np.ndarray
    alpha: np.ndarray


_STILL, _SLOW, _MID, _FAST = (0.0, 0.0), (0.008, 0.016), (0.015, 0.03), (0.045, 0.07)  # x size per frame


def _trajectory(name: str, rng: np.random.Generator, t: np.ndarray, s: int) -> _Path:
    n = len(t)
    # Uniform start on the torus and uniform start angle: every frame of a pair is distributed alike.
    cx0, cy0 = rng.uniform(0, s, 2)
    ang0 = rng.uniform(0, 2 * np.pi)
    radius = np.full(n, rng.uniform(0.14, 0.24) * s)
    alpha = np.ones(n)
    vx = vy = spin = 0.0
    motion = name.split("_", 1)[1] if class_kind(name) == "motion" else None
    if motion in ("left", "right", "up", "down"):
        speed = rng.uniform(*_MID) * s
        vx, vy = {"left": (-speed, 0), "right": (speed, 0), "up": (0, -speed), "down": (0, speed)}[motion]
    elif motion in ("fast", "slow"):
        # Diagonal only, so fast/slow never overlap with left/right/up/down.
        speed = rng.uniform(*(_FAST if motion == "fast" else _SLOW)) * s
        d = rng.integers(4) * np.pi / 2 + np.pi / 4
        vx, vy = speed * np.cos(d), speed * np.sin(d)
    elif motion in ("cw", "ccw"):
        # Image y points down, so a growing angle turns clockwise on screen.
        spin = rng.uniform(0.06, 0.14) * (1 if motion == "cw" else -1)
    elif motion in ("grow", "shrink"):
        # log-radius runs a sawtooth from a uniform phase; the object fades out near the wrap.
        period = rng.uniform(24, 40)
        sign = 1 if motion == "grow" else -1
        phase = np.mod(rng.uniform() + sign * t / period, 1.0)
        rmin, rmax = 0.08 * s, 0.36 * s
        radius = rmin * (rmax / rmin) ** phase
        alpha = np.clip(np.minimum(phase, 1 - phase) / 0.18, 0, 1)
    elif motion is None:  # appearance: random drift and spin, unrelated to the label
        d = rng.uniform(0, 2 * np.pi)
        speed = rng.uniform(0, 0.03) * s
        vx, vy = speed * np.cos(d), speed * np.sin(d)
        spin = rng.uniform(-0.12, 0.12)
    else:
        raise ValueError(name)
    return _Path(np.mod(cx0 + vx * t, s), np.mod(cy0 + vy * t, s), ang0 + spin * t, radius, alpha)


_APPEARANCE = {"disc": ("disc", "smooth"), "square": ("square", "smooth"), "triangle": ("triangle", "smooth"),
               "cross": ("cross", "smooth"), "stripes": ("blob", "stripes"), "checker": ("blob", "checker")}


def render_video(name: str, rng: np.random.Generator, size: int = 64, frames: int = 32,
                 noise: float = 3.0, look_rng: np.random.Generator | None = None) -> tuple[np.ndarray, dict]:
    """One video of class `name` as uint8 [T, H, W, 3] RGB, plus its trajectory (for tests/plots).

    `look_rng`, when given, draws the background, the blob's outline and the object's colours
    instead of `rng` (pass equally seeded generators to give videos one look).
    """
    s = size
    look = rng if look_rng is None else look_rng
    t = np.arange(frames, dtype=np.float64)
    shape, pattern = ("blob", "smooth") if class_kind(name) == "motion" else _APPEARANCE[name.split("_", 1)[1]]
    path = _trajectory(name, rng, t, s)
    bg = _background(look, s)

    pix = np.arange(s, dtype=np.float32) + 0.5
    cx, cy = path.cx[:, None, None].astype(np.float32), path.cy[:, None, None].astype(np.float32)
    # Offsets on the torus, in [-s/2, s/2): the object wraps around the borders.
    dx = np.mod(pix[None, None, :] - cx + s / 2, s) - s / 2
    dy = np.mod(pix[None, :, None] - cy + s / 2, s) - s / 2
    # Every shape lies within its radius (plus the antialiased edge), so only pixels in that disc
    # are shaded: the object covers a few percent of the frame, which makes drawing ~10x cheaper.
    r_all = path.radius.astype(np.float32)
    ti, yi, xi = np.nonzero(dx * dx + dy * dy < ((1.05 * r_all + 1.0) ** 2)[:, None, None])
    ddx, ddy = dx[ti, 0, xi], dy[ti, yi, 0]
    c = np.cos(path.angle).astype(np.float32)[ti]
    sn = np.sin(path.angle).astype(np.float32)[ti]
    r = r_all[ti]
    u = (c * ddx + sn * ddy) / r
    v = (-sn * ddx + c * ddy) / r

    dist = _shape_distance(shape, u, v, look)
    # ~1 pixel of antialiasing whatever the radius, then the global opacity (grow/shrink fades).
    mask = (np.clip((1 - dist) * r + 0.5, 0, 1) * path.alpha.astype(np.float32)[ti])[:, None]
    colour = _fill(pattern, u, v, look)
    video = np.repeat(bg[None], frames, axis=0)
    under = bg[yi, xi]
    video[ti, yi, xi] = under + (colour - under) * mask
    if noise > 0:
        # Triangular noise (sum of two uniform bytes) with std `noise`: 5x cheaper than Gaussian
        # draws, which otherwise dominate the drawing time, and as good at defeating compression.
        b = np.frombuffer(rng.bytes(2 * video.size), dtype=np.uint8).reshape((2,) + video.shape)
        video += (b[0] + b[1].astype(np.float32) - 255.0) * np.float32(noise * np.sqrt(6) / 255)
    info = {"cx": path.cx, "cy": path.cy, "angle": path.angle, "radius": path.radius, "alpha": path.alpha}
    inside = mask[:, 0] >= 0.5
    ids = np.zeros((frames, s, s), np.uint8)
    ids[ti[inside], yi[inside], xi[inside]] = 1
    info["mask"] = ids
    info["flow"] = _object_flow(path, ti[inside], u[inside], v[inside], ddx[inside], ddy[inside], s, frames)
    np.clip(video + 0.5, 0, 255, out=video)  # + 0.5 then truncation rounds to nearest
    return video.astype(np.uint8), info


def _object_flow(path: _Path, ti: np.ndarray, u: np.ndarray, v: np.ndarray, dx: np.ndarray, dy: np.ndarray,
                 s: int, frames: int) -> np.ndarray:
    """float16 [T-1, S, S, 2] forward flow of the object pixels (object coordinates u, v at frame t).

    A point at object coordinates (u, v) sits at centre + r R(angle) (u, v); its displacement to
    frame t+1 is the centre's move (the short way round the torus) plus the change of its offset.
    """
    flow = np.zeros((max(frames - 1, 0), s, s, 2), np.float32)
    keep = ti < frames - 1
    t, u, v, dx, dy = ti[keep], u[keep], v[keep], dx[keep], dy[keep]
    if len(t) == 0:
        return flow.astype(np.float16)
    n = t + 1
    c1, s1 = np.cos(path.angle[n]), np.sin(path.angle[n])
    r1 = path.radius[n]
    dx1 = r1 * (c1 * u - s1 * v)
    dy1 = r1 * (s1 * u + c1 * v)
    mx = np.mod(path.cx[n] - path.cx[t] + s / 2, s) - s / 2
    my = np.mod(path.cy[n] - path.cy[t] + s / 2, s) - s / 2
    # Pixel (x, y) of frame t is at offset (dx, dy) from the centre (pixel centres, torus offsets).
    x = np.mod(path.cx[t] + dx, s).astype(np.intp) % s
    y = np.mod(path.cy[t] + dy, s).astype(np.intp) % s
    flow[t, y, x, 0] = mx + dx1 - dx
    flow[t, y, x, 1] = my + dy1 - dy
    return flow.astype(np.float16)


# ----------------------------------------------------------------------------------------------
# encoding and the corpus


def write_mp4(path: str | Path, video: np.ndarray, fps: int = 16, crf: int = 23) -> Path:
    """Encode uint8 [T, H, W, 3] RGB to H.264 mp4 (yuv420p), deterministically, via a temp file."""
    import av  # imported here so that reading manifests never loads FFmpeg

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.mp4")
    t, h, w, _ = video.shape
    with av.open(str(tmp), mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        # One thread: x264's frame threads make the bitstream depend on scheduling. No assembly:
        # some x264 builds' SIMD paths read uninitialised padding, so the same frames encoded
        # twice could differ; the C path is bit-stable and still takes milliseconds per video.
        stream.options = {"crf": str(crf), "preset": "medium", "threads": "1", "x264-params": "asm=0"}
        stream.codec_context.thread_count = 1
        for i in range(t):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(video[i]), format="rgb24")
            # pts in the encoder's time base (1/fps). Forcing the mp4 stream's time base to 1/fps
            # as well makes the muxer reject B-frame timestamps from about 48 frames on.
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    tmp.replace(path)
    return path


def _video_rng(seed: int, index: int) -> np.random.Generator:
    # One generator per video: the corpus is the same whatever the order or the number of workers.
    return np.random.default_rng([int(seed), int(index), 0x5EED])


def ground_truth_paths(out: Path, name: str, index: int) -> tuple[Path, Path]:
    """(mask folder, flow file) of video `index` of class `name` in a corpus folder."""
    return out / "annotations" / name / f"{index:05d}", out / "flow" / name / f"{index:05d}.npz"


def _make_video(cfg: SynthConfig, index: int, name: str, path: Path) -> None:
    look = np.random.default_rng([int(cfg.seed), 0x100C]) if cfg.shared_look else None
    video, info = render_video(name, _video_rng(cfg.seed, index), cfg.size, cfg.frames, cfg.noise, look)
    if cfg.ground_truth:
        from vidcache.data.davis import write_mask

        mask_dir, flow_file = ground_truth_paths(path.parents[2], name, index)
        for f, ids in enumerate(info["mask"]):
            write_mask(mask_dir / f"{f:05d}.png", ids)
        flow_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = flow_file.with_name(flow_file.stem + ".tmp.npz")
        np.savez_compressed(tmp, flow=info["flow"])
        tmp.replace(flow_file)
    write_mp4(path, video, cfg.fps, cfg.crf)


def _ignore_sigint() -> None:
    """Worker initializer: Ctrl-C is the parent's to report (one line), not each worker's traceback."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _worker_start(parent_pid: int) -> None:
    """Worker initializer: ignore Ctrl-C (see above) and exit with the parent, even a SIGKILLed one."""
    from vidcache.procs import die_with_parent

    _ignore_sigint()
    die_with_parent(parent_pid)


def synthesize(out_dir: str | Path, cfg: SynthConfig, progress: Callable[[int, int], None] | None = None,
               overwrite: bool = False, workers: int = 1) -> Manifest:
    """Write the corpus: `videos/<class>/<index>.mp4`, `manifest.csv`, `classes.txt`, `synth.json`
    (and, with `cfg.ground_truth`, `annotations/` masks and `flow/`, named in the manifest's masks column).

    Video i has class i % K (classes balanced, rows interleaved); splits are stratified per class.
    `progress(done, total)` is called after each video. A non-empty `out_dir` is refused unless
    `overwrite` is set and it holds an earlier synthetic corpus (its `synth.json`). `workers` > 1
    draws and encodes in that many processes; the files are the same bytes either way.
    """
    check(cfg, "synth config")
    if workers < 1:
        raise DataError(f"workers must be >= 1, got {workers}")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise DataError(f"{out} is not empty: choose a new folder or overwrite the earlier corpus")
        if not (out / "synth.json").is_file():
            raise DataError(f"{out} holds files that are not a synthetic corpus (no synth.json): refusing to overwrite")
        for sub in ("videos", "annotations", "flow"):
            shutil.rmtree(out / sub, ignore_errors=True)
        for name in ("manifest.csv", "classes.txt", "synth.json"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)

    classes = synth_classes(cfg.classes)
    labels = np.arange(cfg.videos) % cfg.classes
    splits = stratified_split(labels, cfg.val_fraction, cfg.test_fraction, cfg.seed, keys=classes)
    jobs = [(i, classes[y], out / "videos" / classes[y] / f"{i:05d}.mp4") for i, y in enumerate(labels.tolist())]
    paths = [str(p.resolve()) for _, _, p in jobs]
    masks = [str(ground_truth_paths(out, name, i)[0].resolve()) for i, name, _ in jobs] if cfg.ground_truth else None
    manifest = Manifest(paths, labels.astype(np.int32), splits, classes, source=str(out / "manifest.csv"),
                        masks=masks)
    # synth.json comes first: it marks the folder as a corpus, so an interrupted run can be overwritten.
    meta = {"config": to_dict(cfg), "classes": classes, "kinds": {c: class_kind(c) for c in classes},
            "counts": manifest.counts()}
    (out / "synth.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    for name in classes:
        (out / "videos" / name).mkdir(parents=True, exist_ok=True)
    if workers == 1:
        for done, (i, name, p) in enumerate(jobs, start=1):
            _make_video(cfg, i, name, p)
            if progress is not None:
                progress(done, len(jobs))
    else:
        from concurrent.futures import ProcessPoolExecutor, as_completed

        import functools
        import os

        pool = ProcessPoolExecutor(workers, initializer=functools.partial(_worker_start, os.getpid()))
        try:
            futures = [pool.submit(_make_video, cfg, i, name, p) for i, name, p in jobs]
            for done, fut in enumerate(as_completed(futures), start=1):
                fut.result()
                if progress is not None:
                    progress(done, len(jobs))
        except BaseException:
            # Ctrl-C or a failed video: drop the queued videos and wait only for the ones being
            # written (a `with` block's shutdown would first make every queued video).
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
    # The manifest is written last: its presence means every video is there.
    manifest.write(out / "manifest.csv", classes_file="classes.txt")
    return manifest
