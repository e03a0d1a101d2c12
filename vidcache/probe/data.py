"""Probe inputs: cached features of one split, checked and ready for `train_grid`.

`ProbeData` holds per-video, per-view arrays: `x` is [n, C, D] (pooled clip embeddings) or
[n, C, L, D] (tokens), `y` the labels, an optional token mask and any extra per-view arrays (such
as the clip boxes SCALE uses) that travel with `x` through batching.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from vidcache.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class ProbeData:
    """Features and labels of one split (n videos, C views each)."""

    x: np.ndarray                      # [n, C, D] or [n, C, L, D]; float16 or float32
    y: np.ndarray                      # int64 [n]
    mask: np.ndarray | None = None     # bool [n, C, L], True = real token (tokens only)
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # per-view arrays [n, C, ...]
    index: np.ndarray | None = None    # store rows, for tracing predictions back to videos
    classes: list[str] = field(default_factory=list)
    split: str = ""
    skipped: int = 0                   # failed / pending videos of the split left out
    unlabelled: int = 0                # rows dropped because their label was -1
    spatial: int = 1                   # spatial crops per temporal window (S of a TxS protocol)

    def __post_init__(self):
        self.x = np.asarray(self.x)
        if self.x.ndim == 2:  # one view per video
            self.x = self.x[:, None]
        self.y = np.asarray(self.y, dtype=np.int64)
        if self.x.ndim not in (3, 4):
            raise DataError(f"{self._name}: features must be [n, C, D] or [n, C, L, D], got shape {self.x.shape}")
        if len(self.x) != len(self.y):
            raise DataError(f"{self._name}: {len(self.x)} feature rows but {len(self.y)} labels")
        if self.mask is not None:
            self.mask = np.asarray(self.mask, dtype=bool)
            if self.mask.shape != self.x.shape[:3]:
                raise DataError(f"{self._name}: token mask shape {self.mask.shape} != {self.x.shape[:3]}")
        for k, v in self.extras.items():
            if v.shape[:2] != self.x.shape[:2]:
                raise DataError(f"{self._name}: extra array {k!r} has shape {v.shape}, "
                                f"expected [{self.x.shape[0]}, {self.x.shape[1]}, ...]")

    @property
    def _name(self) -> str:
        return f"split {self.split!r}" if self.split else "probe data"

    def __len__(self) -> int:
        return len(self.y)

    @property
    def num_views(self) -> int:
        return self.x.shape[1]

    @property
    def dim(self) -> int:
        return self.x.shape[-1]

    @property
    def is_tokens(self) -> bool:
        return self.x.ndim == 4

    def subset(self, rows: np.ndarray) -> "ProbeData":
        rows = np.asarray(rows, dtype=np.int64)
        return replace(self, x=self.x[rows], y=self.y[rows],
                       mask=None if self.mask is None else self.mask[rows],
                       extras={k: v[rows] for k, v in self.extras.items()},
                       index=None if self.index is None else self.index[rows])

    def pooled(self) -> "ProbeData":
        """One view per video: the mean of its clip embeddings (`--pool mean`)."""
        if self.is_tokens:
            raise DataError(f"{self._name}: mean pooling over views needs clip embeddings, not tokens")
        x = self.x.astype(np.float32).mean(axis=1, keepdims=True)
        return replace(self, x=x, extras={})

    @classmethod
    def from_store_dict(cls, d: dict[str, np.ndarray], key: str = "emb", classes: list[str] | None = None,
                        split: str = "", extras: tuple[str, ...] = (), skipped: int = 0) -> "ProbeData":
        """From `Store.load(...)` output: `d[key]` the features, `d["label"]` the labels.

        Rows labelled -1 (unlabelled videos) cannot train or score a probe; they are dropped and
        counted in `unlabelled`.
        """
        if key not in d:
            raise DataError(f"split {split!r}: the loaded arrays have no {key!r} (have: {', '.join(sorted(d))})")
        y = np.asarray(d["label"], dtype=np.int64)
        keep = y >= 0
        mask = d.get(f"{key}_mask")
        data = cls(x=d[key], y=y, mask=mask, extras={k: d[k] for k in extras},
                   index=np.asarray(d.get("index", np.arange(len(y)))), classes=list(classes or []),
                   split=split, skipped=skipped)
        if not keep.all():
            data = data.subset(np.flatnonzero(keep))
            data.unlabelled = int((~keep).sum())
        return data


def check_finite(data: ProbeData | np.ndarray, what: str = "features") -> None:
    """Raise DataError naming how many rows hold NaN or inf (a float16 overflow or a bad extraction)."""
    x = data.x if isinstance(data, ProbeData) else np.asarray(data)
    if isinstance(data, ProbeData) and data.split:
        what = f"{what} of split {data.split!r}"
    flat = x.reshape(len(x), -1)
    bad = np.zeros(len(x), dtype=bool)
    step = max(1, (1 << 24) // max(1, flat.shape[1]))  # bounded temporaries on big token arrays
    for s in range(0, len(x), step):
        bad[s:s + step] = ~np.isfinite(flat[s:s + step]).all(axis=1)
    if bad.any():
        first = np.flatnonzero(bad)[:5].tolist()
        raise DataError(f"{what}: {int(bad.sum())} of {len(x)} rows hold NaN or inf (first rows {first}); "
                        f"re-extract them in float32 or drop those videos")


def check_nonempty(data: ProbeData, split: str) -> None:
    if len(data) == 0:
        extra = f" ({data.skipped} failed or pending videos skipped)" if data.skipped else ""
        raise DataError(f"split {split!r} has no labelled, finished videos{extra}; "
                        f"finish the extraction or choose another split")


def subsample(data: ProbeData, shots: int | None = None, fraction: float | None = None,
              seed: int = 0) -> ProbeData:
    """Class-balanced subset: `shots` videos per class, or `fraction` of each class (at least one).

    The same seed always picks the same videos, so low-shot runs are repeatable and comparable
    across backbones extracted from the same manifest.
    """
    if shots is None and fraction is None:
        return data
    if shots is not None and fraction is not None:
        raise DataError("give either shots or fraction, not both")
    rng = np.random.default_rng(seed)
    keep, short = [], []
    for c in np.unique(data.y):
        rows = np.flatnonzero(data.y == c)
        want = shots if shots is not None else max(1, int(round(fraction * len(rows))))
        if want > len(rows):
            short.append(int(c))
        keep.append(rng.permutation(rows)[:want])
    if short:
        log.warning("%d classes have fewer than %s training videos and use all they have (classes %s)",
                    len(short), shots, short[:10])
    return data.subset(np.sort(np.concatenate(keep)))


def split_off(data: ProbeData, fraction: float, seed: int = 0) -> tuple[ProbeData, ProbeData]:
    """Carve a class-balanced validation set out of `data` (for stores without a val split)."""
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(data.y):
        rows = rng.permutation(np.flatnonzero(data.y == c))
        if len(rows) > 1:
            val.append(rows[:max(1, int(round(fraction * len(rows))))])
    val_rows = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    train_rows = np.setdiff1d(np.arange(len(data)), val_rows)
    tr, va = data.subset(train_rows), data.subset(val_rows)
    va.split = "val"
    return tr, va


def spatial_views(protocol: str) -> int:
    """S of a `TxS`, `vjepa:TxS[:seed]` or `vjepa-aug:TxK[:seed]` protocol (clips are temporal-major,
    clip t * S + s), 1 for any other protocol."""
    m = re.fullmatch(r"\s*(?:vjepa(?:-aug)?:)?(\d+)x(\d+)(?::\d+)?\s*", str(protocol or ""))
    return int(m[2]) if m else 1


def token_frame_positions(box: np.ndarray, num_frames: np.ndarray, clip_len: int, t_tokens: int) -> np.ndarray:
    """int64 [n, C, t_tokens]: the frame number of each temporal token of each clip, the positions
    jepa's `ClipAggregation` (evals/video_classification_frozen/utils.py, `use_pos_embed`) embeds:
    its `clip_indices[:, ::tubelet_size]`, with tubelet = clip_len // t_tokens.

    The clip's frames are rebuilt from its box (`clips/box` t0, t1 with `videos/num_frames`) as the
    `vjepa:` sampling draws them: `clip_len` indices `linspace(first, end, clip_len)` floored and
    clipped to `end - 1`, exact for every window that fits its partition. A video shorter than the
    window repeats frames; its positions then spread evenly over the frames it has."""
    nf = np.asarray(num_frames, dtype=np.float64).reshape(-1, 1)
    first = np.rint(box[..., 2].astype(np.float64) * nf)
    end = np.maximum(np.rint(box[..., 5].astype(np.float64) * nf), first + 1)
    j = np.arange(clip_len, dtype=np.float64) / max(clip_len - 1, 1)
    frames = first[..., None] + (end - first)[..., None] * j
    frames = np.minimum(np.floor(frames), (end - 1)[..., None]).astype(np.int64)
    tubelet = max(clip_len // max(t_tokens, 1), 1)
    return frames[..., ::tubelet][..., :t_tokens]


def load_split(store: Any, split: str, arrays: tuple[str, ...] = ("emb",), key: str | None = None,
               extras: tuple[str, ...] = (), positions: bool = False) -> ProbeData:
    """Load one split of a clip store for probing, leaving failed / pending videos out (and saying so).

    `positions`: also the frame number of every temporal token (`extras["frame_pos"]`, [n, C, T],
    see `token_frame_positions`), for the attentive probe's temporal position embedding."""
    key = key or arrays[0]
    load = (*arrays, *extras, *(("box", "num_frames") if positions else ()))
    try:
        d = store.load(arrays=tuple(dict.fromkeys(load)), split=split)
    except DataError:
        raise
    if positions:
        t_tokens = int((getattr(store, "attrs", {}).get("token_grid") or [1])[0])
        clip_len = int((getattr(store, "config", {}) or {}).get("clip_len") or t_tokens)
        d["frame_pos"] = token_frame_positions(d["box"], d["num_frames"], clip_len, t_tokens)
        extras = (*extras, "frame_pos")
    skipped = 0
    if hasattr(store, "rows"):
        skipped = len(store.rows(split, status=None)) - len(d["label"])
    if skipped:
        log.warning("split %r: %d failed or unfinished videos skipped, %d used", split, skipped, len(d["label"]))
    data = ProbeData.from_store_dict(d, key=key.split("/")[-1], classes=list(getattr(store, "classes", []) or []),
                                     split=split, extras=tuple(e.split("/")[-1] for e in extras), skipped=skipped)
    data.spatial = spatial_views(getattr(store, "attrs", {}).get("protocol", ""))
    if data.unlabelled:
        log.warning("split %r: %d unlabelled videos left out", split, data.unlabelled)
    check_nonempty(data, split)
    return data
