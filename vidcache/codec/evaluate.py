"""How good are the codes: PSNR against the source frames, compression factors, a preview image.

PSNR is measured against the frames the codes were made from: decoded from the source video,
same frame selection (`select_frames`) and same resize/crop (`preprocess_frames`), so it measures
quantization alone, not resizing. One PSNR per video (MSE over all its frames and pixels), and the
mean of those over the split, on videos the codebook was not trained on.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from vidcache.codec.codebook import Codebook
from vidcache.codec.frames import select_frames
from vidcache.errors import ConfigError, DataError


def psnr(a: np.ndarray, b: np.ndarray, max_val: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB: 10 log10(max_val^2 / MSE), MSE in float64; inf when equal."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise DataError(f"PSNR needs equal shapes, got {a.shape} and {b.shape}")
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(max_val ** 2 / mse)


def evaluate_codes(originals: Sequence[np.ndarray], codes: Sequence[np.ndarray], codebook: Codebook,
                   names: Sequence[str] | None = None) -> dict:
    """PSNR per video and its mean, plus the raw/code compression factor.

    originals: per video uint8 [T, size, size, 3], already preprocessed (`codebook.preprocess_frames`).
    codes: per video [T, size/p, size/p] as written by `codebook.encode_frames`.
    """
    if len(originals) != len(codes):
        raise DataError(f"{len(originals)} original videos but {len(codes)} code arrays")
    names = list(names) if names is not None else [str(i) for i in range(len(codes))]
    per_video, raw_bytes, code_bytes = {}, 0, 0
    for name, orig, code in zip(names, originals, codes):
        code = np.asarray(code)
        recon = codebook.decode(code)
        if recon.shape != orig.shape:
            raise DataError(f"{name}: codes decode to {recon.shape}, originals are {orig.shape}; "
                            f"were they preprocessed with this codebook's size ({codebook.size})?")
        per_video[name] = psnr(orig, recon)
        raw_bytes += orig.size  # uint8 RGB: one byte per value
        code_bytes += code.nbytes  # the dtype it is stored in (uint8 codes may sit in a uint16 array)
    values = [v for v in per_video.values() if math.isfinite(v)]
    return {
        "psnr_per_video": per_video,
        "psnr_mean": float(np.mean(values)) if values else math.inf,
        "n_videos": len(per_video),
        "raw_bytes": int(raw_bytes),
        "code_bytes": int(code_bytes),
        "compression_codes": raw_bytes / code_bytes if code_bytes else math.nan,
    }


def write_preview(originals: np.ndarray, recon: np.ndarray, path: str | Path, title: str = "",
                  max_frames: int = 4) -> Path:
    """A PNG with one row per frame: original | reconstruction | absolute error (with its PSNR).

    originals, recon: [T, H, W, 3] in 0..255 (uint8 or float).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    originals = np.asarray(originals)
    recon = np.asarray(recon)
    if originals.shape != recon.shape or originals.ndim != 4:
        raise DataError(f"preview needs two [T, H, W, 3] arrays of one shape, got {originals.shape} and {recon.shape}")
    t = originals.shape[0]
    rows = np.unique(np.linspace(0, t - 1, min(max_frames, t)).round().astype(int))
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3.1 * len(rows) + 0.4), squeeze=False)
    for r, i in enumerate(rows):
        o = originals[i].astype(np.float32)
        c = np.clip(recon[i].astype(np.float32), 0, 255)
        err = np.abs(o - c).mean(axis=-1)
        panels = [(o / 255, f"original (frame {i})", None), (c / 255, f"reconstruction ({psnr(o, c):.2f} dB)", None),
                  (err, f"|error| (mean {err.mean():.1f}/255)", "magma")]
        for ax, (img, label, cmap) in zip(axes[r], panels):
            ax.imshow(img, cmap=cmap, vmin=0, vmax=(64 if cmap else 1), interpolation="nearest")
            ax.set_title(label, fontsize=10)
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def evaluate_store(url: str | Path, split: str = "test", preview: str | Path | None = None,
                   max_videos: int | None = None, backend: str = "auto", allow_train_split: bool = False,
                   device: str = "auto") -> dict:
    """PSNR and compression of a code store's `split`, re-decoding the source videos.

    Refuses the split the codebook was trained on unless `allow_train_split` (its PSNR flatters the
    codec). Compression is reported both as raw bytes / code bytes and raw bytes / the whole store's
    bytes on disk (all done videos, metadata and codebook included).
    """
    from vidcache.cache.store import Store
    from vidcache.video.decode import BACKENDS, open_video

    problems = []
    if backend not in BACKENDS:
        problems.append(f"decoder must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if max_videos is not None and max_videos < 1:
        problems.append(f"max_videos must be >= 1 (or left out for every video), got {max_videos}")
    if problems:
        raise ConfigError(problems, "codec eval")
    store = Store.open(url, kind="codes")
    stored = store.codebook()
    attrs = stored.attrs
    codebook = Codebook.from_store_array(stored.centroids, attrs, device=device)
    trained_on = codebook.config.get("split")
    if trained_on == split and not allow_train_split:
        raise DataError(f"the codebook was trained on split {split!r}; evaluate a held-out split "
                        f"(e.g. --split test) or pass allow_train_split to measure it anyway")
    rows = store.rows(split, "done")
    if max_videos is not None:
        rows = rows[:max_videos]
    if len(rows) == 0:
        raise DataError(f"no done videos in split {split!r} of {url}; run `vidcache extract codes` first")
    meta = store.videos()
    n_code = meta["num_code_frames"]
    codes_all = store.read_rows("codes/frames", rows)
    fps, max_frames = attrs.get("fps"), attrs.get("max_frames")
    originals, codes, names = [], [], []
    for j, row in enumerate(rows):
        path = str(meta["path"][row])
        t = int(n_code[row])
        with open_video(path, backend=backend) as v:
            idx = select_frames(v.num_frames, v.fps, fps, max_frames)
            if len(idx) != t:
                raise DataError(f"{path}: frame selection gives {len(idx)} frames but the store holds {t}; "
                                f"the video changed since extraction or the store's fps/max_frames attrs are wrong")
            frames = codebook.preprocess_frames(v.get_frames(idx.tolist()))
        originals.append(frames)
        codes.append(codes_all[j, :t])
        names.append(path)
    result = evaluate_codes(originals, codes, codebook, names)
    done = store.rows(None, "done")
    raw_all = int(n_code[done].sum()) * codebook.size * codebook.size * 3
    disk = store.nbytes_on_disk()
    result.update({"split": split, "store": str(url), "held_out": trained_on != split,
                   "store_bytes_on_disk": int(disk), "raw_bytes_store": raw_all,
                   "compression_disk": raw_all / disk if disk else math.nan,
                   "codebook": repr(codebook)})
    if preview is not None:
        first = int(np.argmin(list(result["psnr_per_video"].values())))
        write_preview(originals[first], codebook.decode(codes[first]), preview,
                      title=f"{Path(names[first]).name} (lowest PSNR of {split}) - k={codebook.k}, "
                            f"patch {codebook.patch}, {codebook.compression():.0f}x")
        result["preview"] = str(preview)
    return result
