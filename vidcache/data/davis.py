"""DAVIS-format data: folders of frames, indexed-palette masks, and the DAVIS-2017 importer.

The layout (davisvideochallenge/davis2017-evaluation, `davis2017/davis.py`):

    ROOT/JPEGImages/480p/<sequence>/00000.jpg ...      frames, one folder per sequence
    ROOT/Annotations/480p/<sequence>/00000.png ...     indexed PNGs: 0 background, 1..n objects, 255 void
    ROOT/ImageSets/2017/train.txt, val.txt             one sequence name per line

A folder of frames is a video to the decoder (`vidcache.video.decode`), so a DAVIS sequence goes
through extraction like any mp4. A mask belongs to the frame with the same file stem; for a video
file, frame i's mask is `{i:05d}.png` (what the synthetic corpus writes).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from vidcache.data.manifest import Manifest
from vidcache.errors import DataError
from vidcache.video.decode import frame_files, is_frames_folder

VOID = 255  # DAVIS's "void" label: ignored by the ground truth (counted as background)


def davis_palette(n: int = 256) -> np.ndarray:
    """uint8 [n, 3]: the PASCAL VOC colour map that DAVIS annotations use (index 1 red, 2 green...)."""
    out = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out[i] = (r, g, b)
    return out


def frame_names(video_path: str, num_frames: int) -> list[str]:
    """Stems naming a video's frames: the files of a frames folder, else `00000`, `00001`, ..."""
    if os.path.isdir(video_path):
        return [p.stem for p in frame_files(video_path)][:num_frames]
    return [f"{i:05d}" for i in range(num_frames)]


def read_mask(path: str | Path) -> np.ndarray:
    """uint8 [H, W] object ids of an indexed PNG (palette indices; a greyscale PNG is read as is).

    An RGB mask is refused: its colours would have to be mapped back to ids by guessing."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "1"):
                raise DataError(f"{path} is a {im.mode} image, not an indexed (palette) mask; save masks "
                                f"as mode-P PNGs with object ids as palette indices (DAVIS format)")
            return np.asarray(im.convert("L") if im.mode == "1" else im, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise DataError(f"mask not found: {path}") from None
    except OSError as e:
        raise DataError(f"cannot read mask {path}: {e}") from None


def write_mask(path: str | Path, ids: np.ndarray, palette: np.ndarray | None = None) -> Path:
    """Write uint8 [H, W] object ids as an indexed PNG with the DAVIS palette (temp file + rename)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"a mask is [H, W], got shape {ids.shape}")
    im = Image.fromarray(ids.astype(np.uint8), mode="P")
    im.putpalette((davis_palette() if palette is None else np.asarray(palette, np.uint8)).reshape(-1).tolist())
    tmp = path.with_name(path.name + ".tmp")
    im.save(tmp, format="PNG")
    tmp.replace(path)
    return path


def mask_path(mask_dir: str | Path, frame_name: str) -> Path:
    return Path(mask_dir) / f"{frame_name}.png"


def _sequences(path: Path) -> list[str]:
    return [s.strip() for s in path.read_text().splitlines() if s.strip()]


def manifest_from_davis(root: str | Path, resolution: str = "480p", year: str = "2017") -> Manifest:
    """A manifest of the DAVIS sequences listed in `ImageSets/<year>/{train,val,test-dev}.txt`.

    Each row is a sequence's frames folder (`JPEGImages/<resolution>/<seq>`), its split, no class
    label (-1), and its mask folder (`Annotations/<resolution>/<seq>`). Sequences listed but absent
    are reported together.
    """
    root = Path(root)
    images = root / "JPEGImages" / resolution
    annotations = root / "Annotations" / resolution
    sets = root / "ImageSets" / year
    problems = [f"{p} is missing" for p in (images, annotations, sets) if not p.is_dir()]
    if problems:
        raise DataError(f"{root} is not a DAVIS tree ({'; '.join(problems)}); expected JPEGImages/{resolution}/, "
                        f"Annotations/{resolution}/ and ImageSets/{year}/{{train,val}}.txt")
    split_files = {"train": sets / "train.txt", "val": sets / "val.txt", "test": sets / "test-dev.txt"}
    paths, splits, masks, missing = [], [], [], []
    for split, f in split_files.items():
        if not f.is_file():
            continue
        for seq in _sequences(f):
            frames = images / seq
            if not is_frames_folder(frames):
                missing.append(f"{split}/{seq}")
            paths.append(str(frames.resolve()))
            splits.append(split)
            masks.append(str((annotations / seq).resolve()))
    if not paths:
        raise DataError(f"{sets} lists no sequences (expected train.txt and/or val.txt, one name per line)")
    if missing:
        raise DataError(f"{len(missing)} DAVIS sequence(s) listed in {sets} have no frames under {images} "
                        f"(first: {missing[0]}); fix the tree or the ImageSets lists")
    return Manifest(paths, np.full(len(paths), -1, np.int32), splits, [], source=str(sets), masks=masks)


def sequence_name(video_path: str) -> str:
    """A sequence name for output folders: a frames folder's name, or a video file's stem."""
    p = Path(video_path.rstrip("/"))
    name = p.name if p.is_dir() else p.stem
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "video"


def write_cutout_davis(root: str | Path, photos: list[np.ndarray], *, sequences: int = 4, frames: int = 24,
                       size: tuple[int, int] = (240, 320), objects: int = 2, val_fraction: float = 0.5,
                       seed: int = 0) -> Path:
    """A DAVIS-2017 tree of real textures with exact masks: elliptical cut-outs of photographs moving
    over another photograph.

    Sequence s shows a crop of photo s % len(photos) as the background, panning slowly, and
    `objects` ellipses cut from the other photos, each on a straight path that bounces off the
    borders; object k+1 is drawn over object k and the masks say who is visible (ids 1..objects).
    Frames are JPEGs (quality 90), masks indexed PNGs; the first `1 - val_fraction` of the
    sequences are listed in `train.txt`, the rest in `val.txt`.
    """
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    H, W = size
    if len(photos) < 2:
        raise DataError("write_cutout_davis needs at least two photographs (background and cut-outs)")
    names = [f"cutout-{s:02d}" for s in range(sequences)]
    n_val = max(1, int(round(sequences * val_fraction))) if sequences > 1 else 0
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    for s, name in enumerate(names):
        bg_photo = np.asarray(photos[s % len(photos)])
        ph, pw = bg_photo.shape[:2]
        scale = max(H / ph, (W + frames * 2) / pw) * 1.15
        big = np.asarray(Image.fromarray(bg_photo).resize((int(pw * scale) + 1, int(ph * scale) + 1),
                                                          Image.BILINEAR))
        oy = int(rng.integers(0, big.shape[0] - H + 1))
        ox0 = int(rng.integers(0, big.shape[1] - W - frames * 2 + 1))
        pan = float(rng.uniform(0.5, 2.0))
        sprites = []
        for k in range(objects):
            src = np.asarray(photos[(s + 1 + k) % len(photos)])
            ry, rx = H * rng.uniform(0.12, 0.2), H * rng.uniform(0.15, 0.25)
            sy = int(rng.integers(int(ry) + 1, src.shape[0] - int(ry) - 1))
            sx = int(rng.integers(int(rx) + 1, src.shape[1] - int(rx) - 1))
            patch = src[sy - int(ry):sy + int(ry) + 1, sx - int(rx):sx + int(rx) + 1]
            py, px = np.mgrid[0:patch.shape[0], 0:patch.shape[1]].astype(np.float32)
            inside = ((py - ry) / ry) ** 2 + ((px - rx) / rx) ** 2 <= 1
            pos = np.array([rng.uniform(ry, H - ry), rng.uniform(rx, W - rx)])
            vel = rng.uniform(2.0, 5.0, 2) * rng.choice([-1, 1], 2)
            sprites.append({"patch": patch, "inside": inside, "pos": pos, "vel": vel, "r": (ry, rx)})
        seq_img = root / "JPEGImages" / "480p" / name
        seq_ann = root / "Annotations" / "480p" / name
        seq_img.mkdir(parents=True, exist_ok=True)
        for f in range(frames):
            ox = ox0 + int(round(pan * f))
            img = big[oy:oy + H, ox:ox + W].copy()
            ids = np.zeros((H, W), np.uint8)
            for k, sp in enumerate(sprites):
                ry, rx = sp["r"]
                cy, cx = sp["pos"]
                y0, x0 = int(round(cy - ry)), int(round(cx - rx))
                ph_, pw_ = sp["inside"].shape
                ys, xs = np.nonzero(sp["inside"])
                ty, tx = ys + y0, xs + x0
                ok = (ty >= 0) & (ty < H) & (tx >= 0) & (tx < W)
                img[ty[ok], tx[ok]] = sp["patch"][ys[ok], xs[ok]]
                ids[ty[ok], tx[ok]] = k + 1
                # move, bouncing off the borders
                sp["pos"] = sp["pos"] + sp["vel"]
                for d, (lo, hi) in enumerate(((ry, H - ry), (rx, W - rx))):
                    if not lo <= sp["pos"][d] <= hi:
                        sp["vel"][d] *= -1
                        sp["pos"][d] = min(max(sp["pos"][d], lo), hi)
            Image.fromarray(img).save(seq_img / f"{f:05d}.jpg", quality=90)
            write_mask(seq_ann / f"{f:05d}.png", ids)
    sets = root / "ImageSets" / "2017"
    sets.mkdir(parents=True, exist_ok=True)
    (sets / "train.txt").write_text("".join(f"{n}\n" for n in names[:sequences - n_val]))
    (sets / "val.txt").write_text("".join(f"{n}\n" for n in names[sequences - n_val:]))
    return root
