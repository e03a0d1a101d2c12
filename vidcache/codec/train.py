"""Training a codebook: sample frames from the train split, cut patches, run k-means.

The training set is recorded by a digest: sha256 of the sorted list of (path, frame indices) that
were decoded, so two codebooks trained on the same frames say so, and a change of videos or
sampling shows up in the config.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from typing import Iterable, Sequence

import numpy as np

import vidcache
from vidcache.codec.codebook import Codebook, CodecConfig, codebook_from_config
from vidcache.codec.frames import patchify, preprocess_frames
from vidcache.codec.kmeans import kmeans
from vidcache.config import check
from vidcache.errors import ConfigError, DataError, VidcacheError
from vidcache.progress import track


def training_digest(items: Iterable[tuple[str, Sequence[int]]]) -> str:
    """sha256 of the canonical JSON of the sorted (path, [frame indices]) list."""
    rows = sorted((str(p), [int(i) for i in idx]) for p, idx in items)
    return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()


def training_frame_indices(num_frames: int, frames_per_video: int) -> np.ndarray:
    """Evenly spaced frames, centred in equal segments (no seed: the same video gives the same frames)."""
    n = min(num_frames, frames_per_video)
    return np.unique(((np.arange(n) + 0.5) * num_frames / n).astype(np.int64).clip(0, num_frames - 1))


def sample_patches(frame_sets: Iterable[np.ndarray], cfg: CodecConfig, quota: int | None = None,
                   rng: np.random.Generator | None = None) -> np.ndarray:
    """Preprocess each uint8 [T, H, W, 3] set, patchify, keep at most `quota` random patches per set.

    Returns uint8 [N, p*p*3] (kept as uint8: 4x less memory than float32 until k-means reads a batch).
    """
    rng = rng or np.random.default_rng(cfg.seed)
    out = []
    for frames in frame_sets:
        flat = patchify(preprocess_frames(frames, cfg.size), cfg.patch).reshape(-1, cfg.patch * cfg.patch * 3)
        if quota is not None and len(flat) > quota:
            flat = flat[np.sort(rng.choice(len(flat), size=quota, replace=False))]
        out.append(flat)
    if not out:
        raise DataError("no training frames: every video failed to decode or the split is empty")
    return np.concatenate(out)


def fit_codebook(patches: np.ndarray, cfg: CodecConfig, progress: bool = True, **info) -> Codebook:
    """k-means on uint8 patch vectors [N, p*p*3] -> a `Codebook` whose config records `info`."""
    check(cfg)
    rng = np.random.default_rng(cfg.seed + 1)
    want = cfg.patches_wanted()
    if len(patches) > want:
        patches = patches[np.sort(rng.choice(len(patches), size=want, replace=False))]
    scale = np.float32(1 / 255.0) if cfg.pixel_space == "rgb01" else np.float32(1.0)
    centroids, stats = kmeans(patches, cfg.k, niter=cfg.niter, seed=cfg.seed, device=cfg.device,
                              progress=progress, transform=lambda b: b.astype(np.float32) * scale)
    import faiss

    return codebook_from_config(
        centroids, cfg, n_train_patches=int(len(patches)), faiss_version=faiss.__version__,
        vidcache_version=vidcache.__version__, final_mse=stats["objective"][-1],
        mse_per_iter=[round(v, 6) for v in stats["objective"]], empty_splits=stats["empty_splits"],
        kmeans_backend=stats["backend"], kmeans_seconds=round(stats["seconds"], 3), **info)


def train_codebook(manifest, cfg: CodecConfig, backend: str = "auto", progress: bool = True) -> Codebook:
    """Train a codebook on `cfg.frames_per_video` frames of each video of `manifest`'s `cfg.split`.

    Videos that fail to decode are skipped (and counted in the config); k-means runs on faiss, on
    every GPU when faiss-gpu sees some, else on CPU (or torch CUDA, see `NearestCentroid`).
    """
    from vidcache.video.decode import BACKENDS, open_video  # lazy: decoding is only needed to train from videos

    check(cfg)
    if backend not in BACKENDS:
        raise ConfigError([f"decoder must be one of {', '.join(BACKENDS)}, got {backend!r}"], "codec train")
    rows = manifest.split_indices(cfg.split)
    quota = math.ceil(cfg.patches_wanted() / len(rows))
    rng = np.random.default_rng(cfg.seed)
    used: list[tuple[str, list[int]]] = []
    failed: list[str] = []

    def frame_sets():
        for i in track(rows, f"sampling frames from {len(rows)} {cfg.split} videos", enabled=progress):
            path = manifest.paths[int(i)]
            try:
                with open_video(path, backend=backend) as v:
                    idx = training_frame_indices(v.num_frames, cfg.frames_per_video)
                    frames = v.get_frames(idx.tolist())
            except VidcacheError as e:
                failed.append(f"{path}: {e}")
                continue
            used.append((path, idx.tolist()))
            yield frames

    patches = sample_patches(frame_sets(), cfg, quota=quota, rng=rng)
    if failed:
        warnings.warn(f"{len(failed)} of {len(rows)} training videos could not be decoded and were skipped; "
                      f"first: {failed[0]}", stacklevel=2)
    return fit_codebook(patches, cfg, progress=progress, train_digest=training_digest(used),
                        n_train_videos=len(used), n_train_frames=sum(len(ix) for _, ix in used),
                        n_failed_videos=len(failed), manifest=getattr(manifest, "source", ""))

