"""Sampling protocols: which clips (frames + crop box) of a video the backbone sees.

A protocol string names a fixed number of clips per video, C, which becomes the clip axis of the
store (`clips/emb [V, C, D]`, `clips/box [V, C, 6]`):

| protocol        | C   | temporal windows                  | spatial crop                       | typical use            |
|-----------------|-----|-----------------------------------|------------------------------------|------------------------|
| `1x1`           | 1   | one, centred                      | centre square                      | cheap single view      |
| `NxS`           | N*S | N, spread uniformly (see below)   | S squares along the long side      | `5x3` K400, `2x3` SSv2 |
| `uniform:C`     | C   | C, spread uniformly               | centre square                      | long videos            |
| `random:C:seed` | C   | C, uniform random start frames    | random area and aspect (RRC)       | SCALE training         |
| `vjepa:TxS[:seed]` | T*S | T segments, jepa's eval sampling | S crops of jepa's EvalVideoTransform | V-JEPA / V-JEPA 2 evals |
| `vjepa-aug:TxK[:seed]` | T*K | K draws of the T segments     | RandomResizedCrop(0.08-1) per clip | cached augmented training views |

Clip order is temporal-major: clip `t * S + s` is temporal window t, spatial crop s.

Temporal windows. A clip has `clip_len` frames `stride` apart, so it spans `(clip_len-1)*stride+1`
frames. N uniform windows start at `round(i * (num_frames - span) / (N - 1))`: the first starts at
frame 0 and the last ends on the last frame; a single window is centred. A video shorter than one
span is never dropped: every window covers the whole video with `clip_len` indices spread evenly
over it (frames repeat when the video has fewer than `clip_len`), and the box says so (t0 = 0,
t1 = 1) instead of pretending to a span the video does not have.

Spatial crops (`NxS`, `uniform:C`, `1x1`). Evaluation resizes the short side to the backbone's image
size and takes S square crops of that size along the long side (left/centre/right for landscape,
top/centre/bottom for portrait; S = 1 is the centre). In original pixels that is a square whose side
is the short side; `crop_size_hint` (a fraction of the short side, default 1.0) shrinks it for the
"resize to 256, crop 224" convention (0.875). Crops are defined on the original frame so that the
box is exact; `transforms.clip_tensor` crops there and then resizes to the backbone's size.

Random clips (`random:C:seed`). SCALE's training clips come from PySlowFast's standard training
augmentation (random temporal position, RandomResizedCrop); the thesis gives no numbers, so the
defaults are: temporal start uniform over the valid starts, crop area uniform in
`RANDOM_SCALE = (0.25, 1.0)` of the frame, aspect ratio log-uniform in `RANDOM_RATIO = (3/4, 4/3)`,
no flip (a flip changes content that the box cannot describe). The area floor is 0.25 rather than
torchvision's 0.08 because the crop feeds a frozen backbone, not its training: a crop keeps at least
half the frame's side, enough context for a useful embedding. The generator of video i is seeded by
the pair (seed, i) (numpy SeedSequence), so a resumed or sharded run draws exactly the same clips
for every video regardless of which worker or in which order it is processed.

Frame protocols (`frames:all`, `frames:N`, `frames:N:stride`) are for dense work: no crop, every
selected frame whole (resized so its short side is `short_side`), the patch tokens of each frame
(each tubelet for video backbones) stored at their spatial grid with the frame indices
(`extract/frames.py`). `frames:all` takes every frame, `frames:N:stride` frames 0, stride,
2*stride, ... (N of them at most; a shorter video gives fewer).

V-JEPA evaluation clips (`vjepa:TxS[:seed]`, e.g. `vjepa:8x3` for K400's 16x8x3, `vjepa:2x3` for
SSv2). The frame indices are those of facebookresearch/jepa's `VideoDataset.loadvideo_decord`
(src/datasets/video_dataset.py; vjepa2 keeps the same code), with the settings of its frozen
evaluation (`allow_clip_overlap=True`, `random_clip_sampling=True`): the video is cut into T equal
partitions of `num_frames // T` frames; when a partition is longer than `clip_len * stride` frames,
a window of that length ends at a random frame `randint(clip_len * stride, partition)` inside it and
its `clip_len` indices are `linspace(start, end, clip_len)` floored (so the step is
`clip_len * stride / (clip_len - 1)`, not `stride`); otherwise the windows overlap, at steps of
`(num_frames - clip_len * stride) // (T - 1)`, each `linspace(0, L, L // stride)` padded with its
last frame (L = min(clip_len * stride, num_frames) - 1). The reference draws the window ends from
numpy's global generator at every epoch, evaluation included; here one draw is cached, from the
generator of (seed, video index), so every run stores the same clips. The S crops are those of
jepa's `EvalVideoTransform` (evals/video_classification_frozen/utils.py): short side resized to
the backbone's image size, then S squares of that size at `i * ((long - size) // (S - 1))` along
the long side; here the same squares are cut from the original frame (to the nearest pixel) and
resized. `vjepa:Tx1` is jepa's single-view centre crop (224 of 256).

Cached augmented training views (`vjepa-aug:TxK[:seed]`): K augmented views of the T segments, for
training a probe on augmentation without the backbone (`--train-store`). Each view redraws jepa's
random segment windows (as its training loader does every epoch) and each clip gets its own
RandomResizedCrop with jepa's eval-script training parameters (`make_dataloader` in
evals/video_classification_frozen/eval.py: scale (0.08, 1), ratio (3/4, 4/3), no flip). RandAugment
and random erasing change pixels, not the box, and are not reproduced. Clip `t * K + k` is segment t
of view k, so `sample=segments` gives K samples of T segments per video.

Boxes are `(x0, y0, t0, x1, y1, t1)` divided by width, height and number of frames, with x1, y1, t1
exclusive: t1 = (last frame index + 1) / num_frames. That is the contract of `clips/box`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from vidcache.errors import ConfigError, DataError

RANDOM_SCALE = (0.25, 1.0)
RANDOM_RATIO = (3 / 4, 4 / 3)
VJEPA_AUG_SCALE = (0.08, 1.0)  # jepa's frozen-eval training crops (random_resize_scale)
MAX_CLIPS = 4096  # more clips per video than this is a typo, not a protocol

_FORMS = "'1x1', 'NxS' (e.g. '5x3', '2x3'), 'uniform:C', 'random:C:seed', 'vjepa:TxS[:seed]' or 'vjepa-aug:TxK[:seed]'"


@dataclass(frozen=True)
class Protocol:
    """A parsed sampling protocol; `str(protocol)` gives back its canonical name."""

    kind: str  # "grid" (NxS, uniform:C), "random", "vjepa" or "vjepa_aug"
    temporal: int  # temporal windows (random: clips)
    spatial: int = 1  # spatial crops per window
    seed: int = 0  # random only
    name: str = ""  # the canonical string, e.g. "5x3", "uniform:8", "random:16:0"
    scale: tuple[float, float] = RANDOM_SCALE  # random only: crop area as a fraction of the frame
    ratio: tuple[float, float] = RANDOM_RATIO  # random only: crop width/height range

    @property
    def num_clips(self) -> int:
        return self.temporal * self.spatial

    @property
    def is_random(self) -> bool:
        return self.kind == "random"

    def __str__(self) -> str:
        return self.name


def parse_protocol(text: str | Protocol) -> Protocol:
    """Parse `1x1`, `NxS`, `uniform:C` or `random:C:seed`; a bad string raises ConfigError saying why."""
    if isinstance(text, Protocol):
        return text
    raw = str(text)
    s = raw.strip().lower()
    what = "sampling protocol"
    if m := re.fullmatch(r"(\d+)x(\d+)", s):
        n, k = int(m[1]), int(m[2])
        _check_counts(raw, n * k, [("temporal clips N", n), ("spatial crops S", k)], what)
        return Protocol("grid", n, k, name=f"{n}x{k}")
    if m := re.fullmatch(r"uniform:(\d+)", s):
        c = int(m[1])
        _check_counts(raw, c, [("clip count C", c)], what)
        return Protocol("grid", c, 1, name=f"uniform:{c}")
    if m := re.fullmatch(r"random:(\d+):(\d+)", s):
        c, seed = int(m[1]), int(m[2])
        _check_counts(raw, c, [("clip count C", c)], what)
        return Protocol("random", c, 1, seed=seed, name=f"random:{c}:{seed}")
    if m := re.fullmatch(r"vjepa-aug:(\d+)x(\d+)(?::(\d+))?", s):
        n, k, seed = int(m[1]), int(m[2]), int(m[3] or 0)
        _check_counts(raw, n * k, [("temporal segments T", n), ("augmented views K", k)], what)
        return Protocol("vjepa_aug", n, k, seed=seed, name=f"vjepa-aug:{n}x{k}:{seed}", scale=VJEPA_AUG_SCALE)
    if m := re.fullmatch(r"vjepa:(\d+)x(\d+)(?::(\d+))?", s):
        n, k, seed = int(m[1]), int(m[2]), int(m[3] or 0)
        _check_counts(raw, n * k, [("temporal segments T", n), ("spatial views S", k)], what)
        return Protocol("vjepa", n, k, seed=seed, name=f"vjepa:{n}x{k}:{seed}")
    if s.startswith("vjepa"):
        hint = "vjepa needs segments x views and an optional seed, e.g. 'vjepa:8x3' or 'vjepa:2x3:0'"
    elif s.startswith("random"):
        hint = "random needs a clip count and a non-negative integer seed, e.g. 'random:16:0'"
    elif s.startswith("uniform"):
        hint = "uniform needs a clip count, e.g. 'uniform:8'"
    else:
        hint = f"use {_FORMS}"
    raise ConfigError([f"{raw!r} is not a sampling protocol: {hint}"], what)


def _check_counts(raw: str, total: int, counts: list[tuple[str, int]], what: str) -> None:
    problems = [f"{raw!r}: {name} must be at least 1" for name, v in counts if v < 1]
    if not problems and total > MAX_CLIPS:
        problems.append(f"{raw!r}: {total} clips per video is more than {MAX_CLIPS}")
    if problems:
        raise ConfigError(problems, what)


@dataclass(frozen=True)
class FrameProtocol:
    """A parsed frame protocol: `count` frames (None = every frame), `stride` apart from frame 0."""

    count: int | None
    stride: int = 1
    name: str = "frames:all"

    def __str__(self) -> str:
        return self.name

    def select(self, num_frames: int) -> np.ndarray:
        """int64 frame indices of a video with `num_frames` frames."""
        idx = np.arange(0, max(0, int(num_frames)), self.stride, dtype=np.int64)
        return idx if self.count is None else idx[:self.count]

    def max_frames(self, num_frames: int) -> int:
        return len(self.select(num_frames))


def is_frame_protocol(text: str) -> bool:
    return str(text).strip().lower().startswith("frames")


def parse_frame_protocol(text: str | FrameProtocol) -> FrameProtocol:
    """Parse `frames:all`, `frames:N` or `frames:N:stride`; a bad string raises ConfigError saying why."""
    if isinstance(text, FrameProtocol):
        return text
    raw = str(text)
    s = raw.strip().lower()
    if m := re.fullmatch(r"frames:all(?::(\d+))?", s):
        stride = int(m[1] or 1)
        if stride < 1:
            raise ConfigError([f"{raw!r}: the stride must be at least 1"], "frame protocol")
        return FrameProtocol(None, stride, name="frames:all" + (f":{stride}" if stride > 1 else ""))
    if m := re.fullmatch(r"frames:(\d+)(?::(\d+))?", s):
        n, stride = int(m[1]), int(m[2] or 1)
        problems = [f"{raw!r}: {what} must be at least 1" for what, v in (("the frame count N", n),
                                                                       ("the stride", stride)) if v < 1]
        if problems:
            raise ConfigError(problems, "frame protocol")
        return FrameProtocol(n, stride, name=f"frames:{n}" + (f":{stride}" if stride > 1 else ""))
    raise ConfigError([f"{raw!r} is not a frame protocol: use 'frames:all', 'frames:all:STRIDE', 'frames:N' "
                       f"or 'frames:N:STRIDE' (e.g. 'frames:32:2')"], "frame protocol")


def frame_size(height: int, width: int, short_side: int, multiple: int) -> tuple[int, int]:
    """(h, w) a frame is resized to: short side `short_side`, long side floored to a `multiple`.

    DINO's `read_frame` (eval_video_segmentation.py) does this with 480 and 64, keeping the aspect
    ratio up to the floor (a square 720p frame becomes 480 x 448). When the floor would leave
    nothing (a long side under one multiple), the long side is the short side.
    """
    lo, hi = (height, width) if height <= width else (width, height)
    long = int(((short_side * hi) / lo) // multiple) * multiple or short_side
    return (short_side, long) if height <= width else (long, short_side)


@dataclass(frozen=True)
class ClipSpec:
    """One clip: the frames to decode, where to crop them, and its normalised box."""

    frame_indices: list[int]  # clip_len frame numbers, non-decreasing, repeats allowed
    crop: tuple[int, int, int, int]  # (x0, y0, x1, y1) in pixels of the original frame, x1/y1 exclusive
    box: tuple[float, float, float, float, float, float]  # (x0, y0, t0, x1, y1, t1) normalised
    temporal_index: int = 0
    spatial_index: int = 0


def plan_clips(protocol: str | Protocol, num_frames: int, height: int, width: int, clip_len: int,
               stride: int = 1, crop_size_hint: float | None = None,
               video_index: int = 0, size: int | None = None) -> list[ClipSpec]:
    """The `protocol.num_clips` clips of one video, in store order (temporal-major).

    `crop_size_hint`: side of the square evaluation crop as a fraction of the short side (None =
    1.0). Ignored by `random:` protocols, whose crops are drawn. `video_index` is the video's store
    row: it seeds `random:` and `vjepa:` protocols so any run draws the same clips for that video.
    `size`: the backbone's image size, where `vjepa:` crops are placed (the short side by default).
    """
    p = parse_protocol(protocol)
    _check_plan_args(num_frames, height, width, clip_len, stride, crop_size_hint)
    span = (clip_len - 1) * stride + 1
    if p.is_random:
        rng = np.random.default_rng([p.seed, int(video_index)])
        specs = []
        for c in range(p.num_clips):
            start = int(rng.integers(0, num_frames - span + 1)) if num_frames >= span else 0
            crop = _random_resized_crop(rng, height, width, p.scale, p.ratio)
            specs.append(_spec(_window(start, num_frames, clip_len, stride), crop, num_frames,
                               height, width, c, 0))
        return specs
    if p.kind == "vjepa_aug":
        rng = np.random.default_rng([p.seed, int(video_index)])
        views = [vjepa_frame_indices(num_frames, p.temporal, clip_len, stride, rng) for _ in range(p.spatial)]
        crops = [[_random_resized_crop(rng, height, width, p.scale, p.ratio) for _ in range(p.temporal)]
                 for _ in range(p.spatial)]
        return [_spec(views[k][t], crops[k][t], num_frames, height, width, t, k)
                for t in range(p.temporal) for k in range(p.spatial)]
    if p.kind == "vjepa":
        rng = np.random.default_rng([p.seed, int(video_index)])
        windows = vjepa_frame_indices(num_frames, p.temporal, clip_len, stride, rng)
        crops = vjepa_crops(p.spatial, height, width, size or min(height, width))
        return [_spec(win, crop, num_frames, height, width, t, s)
                for t, win in enumerate(windows) for s, crop in enumerate(crops)]
    starts = _uniform_starts(p.temporal, num_frames, span)
    crops = _grid_crops(p.spatial, height, width, 1.0 if crop_size_hint is None else crop_size_hint)
    return [_spec(_window(start, num_frames, clip_len, stride), crop, num_frames, height, width, t, s)
            for t, start in enumerate(starts) for s, crop in enumerate(crops)]


def vjepa_frame_indices(num_frames: int, segments: int, clip_len: int, stride: int,
                        rng: np.random.Generator | None) -> list[list[int]]:
    """Frame indices of jepa's evaluation segments (see the module docstring); `rng` None puts each
    window at the start of its partition (the reference's `random_clip_sampling=False`)."""
    span = clip_len * stride  # the reference's clip_len: frames_per_clip * frame_step
    part = num_frames // segments
    out = []
    for i in range(segments):
        if part > span:
            end = int(rng.integers(span, part)) if rng is not None else span
            idx = np.linspace(end - span, end, num=clip_len)
            idx = np.clip(idx, end - span, end - 1).astype(np.int64) + i * part
        else:
            last = min(span, num_frames) - 1
            n = last // stride
            idx = np.concatenate((np.linspace(0, last, num=n), np.ones(clip_len - n) * last))
            idx = np.clip(idx, 0, last - 1).astype(np.int64)
            step = (num_frames - span) // (segments - 1) if num_frames > span and segments > 1 else 0
            idx = idx + i * step
        # a one-frame video clips to index -1, which the reference's decoder reads as the last frame
        out.append([int(v) % num_frames for v in idx])
    return out


def vjepa_crops(spatial: int, height: int, width: int, size: int) -> list[tuple[int, int, int, int]]:
    """jepa's EvalVideoTransform squares, placed on the frame resized to short side `size`
    (`get_resize_sizes`: the long side becomes int(size * long / short)) and mapped back to
    original pixels. One view is jepa's single-view eval (`VideoTransform`): short side resized to
    int(size * 256 / 224), centre square of `size`, i.e. the centre 224/256 of the short side."""
    short, long = min(height, width), max(height, width)
    if spatial == 1:
        side = max(1, min(short, int(round(short * size / int(size * 256 / 224)))))
        y0, x0 = (height - side) // 2, (width - side) // 2
        return [(x0, y0, x0 + side, y0 + side)]
    resized_long = int(size * long / short)
    step = (resized_long - size) // (spatial - 1)
    crops = []
    for i in range(spatial):
        a = min(int(round(i * step * long / resized_long)), long - short)
        # the reference crops along H only when H > W (a square frame is cropped along W)
        crops.append((0, a, short, a + short) if height > width else (a, 0, a + short, short))
    return crops


def _check_plan_args(num_frames, height, width, clip_len, stride, crop_size_hint) -> None:
    if num_frames < 1:
        raise DataError(f"video has {num_frames} frames; nothing to sample")
    if height < 1 or width < 1:
        raise DataError(f"video has an empty frame size {width}x{height}")
    problems = []
    if clip_len < 1:
        problems.append(f"clip_len must be >= 1, got {clip_len}")
    if stride < 1:
        problems.append(f"stride must be >= 1, got {stride}")
    if crop_size_hint is not None and not (0.0 < crop_size_hint <= 1.0):
        problems.append(f"crop_size_hint is a fraction of the short side in (0, 1], got {crop_size_hint}")
    if problems:
        raise ConfigError(problems, "clip sampling")


def _uniform_starts(n: int, num_frames: int, span: int) -> list[int]:
    if num_frames <= span:
        return [0] * n
    room = num_frames - span
    if n == 1:
        return [room // 2]
    # integer rounding of i*room/(n-1), half up, so the result never depends on float error
    return [(2 * i * room + (n - 1)) // (2 * (n - 1)) for i in range(n)]


def _window(start: int, num_frames: int, clip_len: int, stride: int) -> list[int]:
    span = (clip_len - 1) * stride + 1
    if num_frames >= span:
        return [start + k * stride for k in range(clip_len)]
    if clip_len == 1:
        return [(num_frames - 1) // 2]
    # Too short for one window: spread clip_len indices evenly over the whole video (round half up).
    last = num_frames - 1
    return [(2 * k * last + (clip_len - 1)) // (2 * (clip_len - 1)) for k in range(clip_len)]


def _grid_crops(spatial: int, height: int, width: int, fraction: float) -> list[tuple[int, int, int, int]]:
    short, long = min(height, width), max(height, width)
    side = max(1, int(round(short * fraction)))
    across = (short - side) // 2
    if spatial == 1:
        along = [(long - side) // 2]
    else:
        room = long - side
        along = [(2 * j * room + (spatial - 1)) // (2 * (spatial - 1)) for j in range(spatial)]
    if width >= height:  # landscape (or square): crops move left -> right
        return [(a, across, a + side, across + side) for a in along]
    return [(across, a, across + side, a + side) for a in along]


def _random_resized_crop(rng: np.random.Generator, height: int, width: int, scale: tuple[float, float],
                         ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params, drawn from a numpy Generator."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            y0 = int(rng.integers(0, height - h + 1))
            x0 = int(rng.integers(0, width - w + 1))
            return x0, y0, x0 + w, y0 + h
    # Fallback (an extreme frame shape): the largest centred crop whose aspect is within range.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    w, h = max(1, min(w, width)), max(1, min(h, height))
    x0, y0 = (width - w) // 2, (height - h) // 2
    return x0, y0, x0 + w, y0 + h


def _spec(indices: list[int], crop: tuple[int, int, int, int], num_frames: int, height: int, width: int,
          t: int, s: int) -> ClipSpec:
    x0, y0, x1, y1 = crop
    box = (x0 / width, y0 / height, min(indices) / num_frames,
           x1 / width, y1 / height, (max(indices) + 1) / num_frames)
    return ClipSpec(frame_indices=[int(i) for i in indices], crop=tuple(int(v) for v in crop),
                    box=tuple(float(v) for v in box), temporal_index=t, spatial_index=s)


def boxes(specs: list[ClipSpec]) -> np.ndarray:
    """float32 [C, 6] boxes of a video's clips, ready for `clips/box`."""
    return np.asarray([s.box for s in specs], dtype=np.float32).reshape(len(specs), 6)


def frames_needed(specs: list[ClipSpec]) -> tuple[np.ndarray, np.ndarray]:
    """(unique sorted frame indices, positions [C, clip_len] into them).

    Decode `unique` once (`video.get_frames(unique)`) and take clip c's frames as
    `frames[positions[c]]`: the spatial crops of one window share their frames, so a `5x3` plan
    decodes 5 windows' worth of frames, not 15.
    """
    if not specs:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.int64)
    all_idx = np.asarray([s.frame_indices for s in specs], dtype=np.int64)
    unique, inverse = np.unique(all_idx, return_inverse=True)
    return unique, inverse.reshape(all_idx.shape)
