"""Training clips from a code store (decoded on the device), or from the mp4s for comparison.

Codes are tiny (2 bytes per p x p patch), so the loader keeps a split's codes in memory and does
all augmentation on them, at patch granularity, before any pixel exists:

- time: T frames at a stride from a random start (the last frame repeats when a video is short);
- space: a random crop box of code cells (scale and aspect ratio ranges, like RandomResizedCrop),
  resampled to the output grid by nearest cell (a crop of exactly the output size is a plain crop);
- flip: a flag per clip; the decoder holds the codebook twice, once with every tile mirrored, and a
  flipped clip reverses its code columns and indexes the mirrored half.

Worker processes only gather small integer arrays (a batch at a time, sent back as numpy);
`ClipDecoder` turns a batch into normalised pixels on the device with one gather. `Mp4ClipDataset`
produces the same clips (same videos, frames, crop boxes and flips for a seed) by decoding the
mp4s, for throughput comparisons and for users without a code store; `PixelDecoder` normalises its
batches on the device.

Determinism: every random choice of a clip comes from `numpy.random.default_rng([seed, position])`
where `position` is the clip's place in the endless training stream, and the stream's order from
`(seed, epoch)`. `StreamSampler` gives rank r of w, at step s, the positions s*B + r + w*j of the
global batch B, so any number of ranks (and any resume step) sees the same clips.
"""

from __future__ import annotations

import sys
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from vidcache.codec.decoder import CodeDecoder
from vidcache.errors import ConfigError, DataError


# ----------------------------------------------------------------------------- reading a code store

class CodeSource:
    """What the loaders need from a code store: codes of the done videos of a split, and their metadata."""

    def __init__(self, codes: np.ndarray, num_code_frames: np.ndarray, centroids: np.ndarray, patch: int,
                 rows: np.ndarray, paths: Sequence[str] = (), src_frames: np.ndarray | None = None,
                 src_fps: np.ndarray | None = None, fps: float | None = None, max_frames: int | None = None,
                 labels: np.ndarray | None = None):
        self.codes = codes  # [V, T_max, g, g] uint8 / uint16
        self.num_code_frames = np.asarray(num_code_frames, dtype=np.int64)
        self.centroids = np.asarray(centroids, dtype=np.float32)  # [K, p*p*3], 0..255
        self.patch = int(patch)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.paths = list(paths)
        self.src_frames = src_frames
        self.src_fps = src_fps
        self.fps, self.max_frames = fps, max_frames
        self.labels = labels

    @property
    def grid(self) -> int:
        return int(self.codes.shape[-1])

    @property
    def size(self) -> int:
        return self.grid * self.patch

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def from_store(cls, url: str, split: str | None = "train", storage_options: dict | None = None) -> "CodeSource":
        """Read a split's codes with whole-chunk reads (the store's `read_rows`)."""
        from vidcache.cache import Store

        store = Store.open(url, kind="codes", storage_options=storage_options)
        rows = store.rows(split, "done")
        if len(rows) == 0:
            raise DataError(f"code store {url} has no finished videos in split {split!r}; "
                            "run `vidcache extract codes` to completion first")
        cb = store.codebook()
        attrs = cb.attrs
        meta = store.videos(rows)
        return cls(codes=store.read_rows("codes/frames", rows),
                   num_code_frames=store.read_rows("videos/num_code_frames", rows),
                   centroids=cb.centroids, patch=int(attrs["patch"]), rows=rows,
                   paths=[str(p) for p in meta["path"]], src_frames=np.asarray(meta["num_frames"]),
                   src_fps=np.asarray(meta["fps"]), fps=attrs.get("fps"), max_frames=attrs.get("max_frames"),
                   labels=np.asarray(meta["label"]))


# ----------------------------------------------------------------------------- sampling a clip

def clip_frames(num_frames: int, length: int, stride: int, rng: np.random.Generator) -> np.ndarray:
    """`length` frame indices at `stride` from a random start; indices past the end repeat the last frame."""
    span = (length - 1) * stride + 1
    start = int(rng.integers(0, max(1, num_frames - span + 1)))
    return np.minimum(start + stride * np.arange(length), max(num_frames, 1) - 1)


def crop_box(grid: int, scale: tuple[float, float], ratio: tuple[float, float],
             rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(top, left, height, width) in cells: area a fraction in `scale`, height/width in `ratio` (log-uniform)."""
    area = grid * grid * rng.uniform(*scale)
    r = float(np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1]))))
    h = int(min(grid, max(1, round(np.sqrt(area * r)))))
    w = int(min(grid, max(1, round(np.sqrt(area / r)))))
    top = int(rng.integers(0, grid - h + 1))
    left = int(rng.integers(0, grid - w + 1))
    return top, left, h, w


def resample_index(start: int, length: int, out: int) -> np.ndarray:
    """Nearest-cell indices that stretch `length` cells from `start` onto `out` cells."""
    return start + np.minimum(((np.arange(out) + 0.5) * length / out).astype(np.int64), length - 1)


def crop_index(box: tuple[int, int, int, int], out: int, flip: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Row and column cell indices [out] of a crop box resampled by nearest cell (columns reversed when flipped)."""
    top, left, h, w = box
    ys, xs = resample_index(top, h, out), resample_index(left, w, out)
    return ys, (xs[::-1] if flip else xs)


def crop_codes(codes: np.ndarray, box: tuple[int, int, int, int], out: int, flip: bool = False) -> np.ndarray:
    """codes [T, g, g] -> [T, out, out]: the box resampled by nearest cell, columns reversed when flipped."""
    ys, xs = crop_index(box, out, flip)
    return np.ascontiguousarray(codes[:, ys[:, None], xs[None, :]])


class ClipSampling:
    """The random choices of one clip, shared by the codes and mp4 datasets."""

    def __init__(self, length: int, stride: int, out_grid: int, crop_scale: tuple[float, float] = (0.3, 1.0),
                 crop_aspect: tuple[float, float] = (0.75, 1.35), flip: bool = True, seed: int = 0):
        self.length, self.stride, self.out_grid = int(length), int(stride), int(out_grid)
        self.crop_scale, self.crop_aspect = tuple(crop_scale), tuple(crop_aspect)
        self.flip, self.seed = bool(flip), int(seed)

    def __call__(self, num_frames: int, grid: int, position: int) -> tuple[np.ndarray, tuple, bool]:
        rng = np.random.default_rng([self.seed, int(position)])
        frames = clip_frames(num_frames, self.length, self.stride, rng)
        box = crop_box(grid, self.crop_scale, self.crop_aspect, rng)
        flip = bool(self.flip and rng.random() < 0.5)
        return frames, box, flip


class CodeClipDataset(Dataset):
    """Item `(i, position)` -> {"codes": [T, out, out], "flip": bool, "index": i} for video i of `source`.

    The DataLoader asks for a whole batch at once (`__getitems__`): each clip's random choices are
    still drawn from its own generator, but all clips are cut with one gather from the flattened
    codes. A batch of 8 clips of 16 frames took 0.56 ms in a worker this way, 0.42 ms of it the
    per-clip draws, against 0.81 ms clip by clip.
    """

    def __init__(self, source: CodeSource, sampling: ClipSampling):
        self.source, self.sampling = source, sampling
        # A view for an in-memory or memmapped C-contiguous array (from_store gives one); a single
        # copy otherwise. Forked workers share it copy-on-write, like the codes.
        self._flat = np.ascontiguousarray(source.codes).reshape(-1)
        # resample_index(0, length, out) for every box side length (row 0 unused): a box's cells
        # are then one add, the same integers `crop_index` computes clip by clip.
        g, out = source.grid, sampling.out_grid
        self._cells = np.zeros((g + 1, out), dtype=np.int64)
        for length in range(1, g + 1):
            self._cells[length] = resample_index(0, length, out)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: Sequence[tuple[int, int]]) -> list[dict]:
        src = self.source
        _, t_max, g, _ = src.codes.shape
        n = len(keys)
        videos = np.array([int(i) for i, _ in keys], dtype=np.int64)
        frames = np.empty((n, self.sampling.length), dtype=np.int64)
        boxes = np.empty((n, 4), dtype=np.int64)  # top, left, height, width
        flips = np.empty(n, dtype=bool)
        for b, (i, position) in enumerate(keys):
            frames[b], boxes[b], flips[b] = self.sampling(int(src.num_code_frames[i]), g, position)
        ys = boxes[:, 0:1] + self._cells[boxes[:, 2]]  # [B, out]
        xs = boxes[:, 1:2] + self._cells[boxes[:, 3]]
        xs[flips] = xs[flips, ::-1]
        # Flat offset of cell (video, frame, row, column) in the C-ordered [V, T_max, g, g] array.
        flat = (((videos[:, None, None, None] * t_max + frames[:, :, None, None]) * g + ys[:, None, :, None]) * g
                + xs[:, None, None, :])
        codes = np.take(self._flat, flat)  # [B, T, out, out], the codes' own dtype
        return [{"codes": codes[b], "flip": bool(flips[b]), "index": int(videos[b])} for b in range(n)]


class Mp4ClipDataset(Dataset):
    """The clips of `CodeClipDataset`, decoded from the source videos (the "auto" decoder).

    Frames are selected as `extract codes` selected them (same fps and max_frames), resized and
    centre-cropped to the codebook's size, then the same crop box (in pixels: cells x patch) is
    resized to the output size (bilinear, antialiased). Readers are opened inside each call, so no
    decoder exists before DataLoader workers fork.
    """

    def __init__(self, source: CodeSource, sampling: ClipSampling, backend: str = "auto"):
        if not source.paths or source.src_frames is None:
            raise DataError("the mp4 loader needs the store's video paths and frame counts")
        self.source, self.sampling, self.backend = source, sampling, backend

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        from vidcache.codec.frames import preprocess_frames, select_frames
        from vidcache.video.decode import open_video

        i, position = key
        src = self.source
        n = int(src.num_code_frames[i])
        frames, (top, left, h, w), flip = self.sampling(n, src.grid, position)
        selected = select_frames(int(src.src_frames[i]), float(src.src_fps[i]), src.fps, src.max_frames)
        wanted = selected[frames]
        uniq, inverse = np.unique(wanted, return_inverse=True)  # decode each source frame once
        with open_video(src.paths[i], backend=self.backend) as video:
            decoded = video.get_frames(uniq.tolist())
        pixels = preprocess_frames(decoded, src.size)[inverse]
        p, out = src.patch, self.sampling.out_grid * src.patch
        crop = pixels[:, top * p:(top + h) * p, left * p:(left + w) * p]
        if crop.shape[1:3] != (out, out):
            x = torch.from_numpy(np.ascontiguousarray(crop)).permute(0, 3, 1, 2)
            x = F.interpolate(x, size=(out, out), mode="bilinear", antialias=True, align_corners=False)
            crop = x.permute(0, 2, 3, 1).numpy()
        if flip:
            crop = crop[:, :, ::-1]
        return {"pixels": np.ascontiguousarray(crop), "flip": flip, "index": int(i)}


# Arrays below this size leave a worker as numpy, pickled into its result pipe by value; larger
# ones as tensors, which torch moves through a new shared-memory segment each. A segment costs
# about 0.7 ms per tensor, more than cutting a whole batch of codes takes: a batch sent as three
# tensors reached the main process at 3.5 ms per batch, as numpy at 1.6 ms. Pixel batches (MBs)
# keep the shared memory, where one copy beats pickling through a pipe.
_BY_VALUE_BYTES = 1 << 20


def collate_arrays(items: list[dict]) -> dict:
    """Stack a batch in the worker: numpy arrays (torch has few uint16 ops), big ones as tensors for transport."""
    out: dict = {"flip": np.array([it["flip"] for it in items], dtype=bool),
                 "index": np.array([it["index"] for it in items], dtype=np.int64)}
    for name in ("codes", "pixels"):
        if name in items[0]:
            x = np.stack([it[name] for it in items])
            out[name] = x if x.nbytes < _BY_VALUE_BYTES else torch.from_numpy(x)
    return out


def as_tensors(batch: dict, pin_memory: bool = False) -> dict:
    """A `collate_arrays` batch with every array as a tensor (no copy), pinned when asked."""
    out = {}
    for name, x in batch.items():
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
            if pin_memory:
                x = x.pin_memory()
        out[name] = x
    return out


def collate(items: list[dict]) -> dict:
    """A batch as tensors: "codes" or "pixels" stacked, "flip" bool [B], "index" int64 [B]."""
    return as_tensors(collate_arrays(items))


# ----------------------------------------------------------------------------- order of the clips

class StreamSampler(Sampler):
    """Endless `(video, position)` keys for one rank: epoch after epoch of seeded permutations.

    The global batch of step s holds stream positions s*B .. s*B + B - 1; rank r takes those with
    offset r, r + w, r + 2w, ... (the DistributedSampler interleaving), starting at `start_step`.
    """

    def __init__(self, num_videos: int, local_batch: int, rank: int = 0, world: int = 1, seed: int = 0,
                 start_step: int = 0):
        if num_videos < 1:
            raise DataError("no videos to sample clips from")
        self.n, self.local_batch, self.rank, self.world = int(num_videos), int(local_batch), int(rank), int(world)
        self.seed, self.start_step = int(seed), int(start_step)
        self._perm: tuple[int, np.ndarray] | None = None

    @property
    def global_batch(self) -> int:
        return self.local_batch * self.world

    def video_at(self, position: int) -> int:
        epoch, offset = divmod(int(position), self.n)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, 1, epoch]).permutation(self.n))
        return int(self._perm[1][offset])

    def positions(self, step: int) -> list[int]:
        base = step * self.global_batch + self.rank
        return [base + self.world * j for j in range(self.local_batch)]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        step = self.start_step
        while True:
            for pos in self.positions(step):
                yield self.video_at(pos), pos
            step += 1


class ClipLoader(DataLoader):
    """A DataLoader whose batches leave the workers as `collate_arrays` output and come out as tensors."""

    def __iter__(self) -> Iterator[dict]:
        pin = self.pin_memory  # big tensors are pinned by the DataLoader's thread, the rest here
        for batch in super().__iter__():
            yield as_tensors(batch, pin)


def make_loader(dataset: Dataset, sampler: StreamSampler, workers: int = 0, pin_memory: bool = False) -> ClipLoader:
    """A DataLoader over the endless stream; fork on Linux so workers share the in-memory codes."""
    ctx = None
    if workers > 0 and sys.platform.startswith("linux"):
        ctx = "fork"  # copy-on-write: the codes array is not pickled once per worker
    from vidcache.procs import worker_init

    return ClipLoader(dataset, batch_size=sampler.local_batch, sampler=sampler, num_workers=workers,
                      collate_fn=collate_arrays, pin_memory=pin_memory, multiprocessing_context=ctx,
                      persistent_workers=False, prefetch_factor=4 if workers > 0 else None,
                      worker_init_fn=worker_init() if workers > 0 else None)


# ----------------------------------------------------------------------------- on-device decoding

def mirror_tiles(centroids: np.ndarray, patch: int) -> np.ndarray:
    """Every [p, p, 3] tile of `centroids` [K, p*p*3] mirrored left-right."""
    tiles = np.asarray(centroids, dtype=np.float32).reshape(-1, patch, patch, 3)
    return np.ascontiguousarray(tiles[:, :, ::-1]).reshape(len(tiles), -1)


class _ReusedOutput:
    """One output tensor kept between calls, for decoders built with `reuse_output=True`.

    A training loop is done with a batch before it decodes the next one, so the decoders can
    write every batch into the same memory. On a CPU a fresh clip batch (25 MB for 8 x 16 x 128 x
    128) is served from new pages and its page faults cost as much as the decoding itself; CUDA's
    caching allocator already reuses memory, so there it only saves an allocator call.
    """

    def __init__(self, reuse: bool):
        self.reuse = reuse
        self._out: Tensor | None = None

    def __call__(self, shape: tuple[int, ...], device: torch.device) -> Tensor | None:
        if not self.reuse:
            return None
        if self._out is None or tuple(self._out.shape) != shape or self._out.device != device:
            self._out = torch.empty(shape, dtype=torch.float32, device=device)
        return self._out


class ClipDecoder(nn.Module):
    """Code batches -> normalised clips [B, 3, T, H, W] on the codebook's device.

    Holds [codebook; mirrored codebook] in one `CodeDecoder`, so a flipped clip (whose columns the
    loader already reversed) decodes with the same single gather, offset by K. With
    `reuse_output=True` every call returns the same tensor, overwritten by the next call.
    """

    def __init__(self, centroids: np.ndarray, patch: int, mean: Sequence[float], std: Sequence[float],
                 reuse_output: bool = False):
        super().__init__()
        self.output = _ReusedOutput(reuse_output)
        centroids = np.asarray(centroids, dtype=np.float32)
        self.k = int(centroids.shape[0])
        self.decoder = CodeDecoder(np.concatenate([centroids, mirror_tiles(centroids, patch)]), patch,
                                   mean=mean, std=std)

    def forward(self, codes: Tensor, flip: Tensor | None = None) -> Tensor:
        device = self.decoder.codebook.device
        # Small integer codes cross to the device; widening happens there (the decoder indexes with int64).
        idx = codes.to(device=device, non_blocking=True).to(torch.int64)
        if flip is not None:
            idx = idx + flip.to(device=device, dtype=torch.int64).view(-1, 1, 1, 1) * self.k
        b, t, h, w = idx.shape
        p = self.decoder.patch
        return self.decoder(idx, out=self.output((b, 3, t, h * p, w * p), device))


class PixelDecoder(nn.Module):
    """uint8 pixel batches [B, T, H, W, 3] (already flipped) -> normalised clips [B, 3, T, H, W].

    `reuse_output=True` returns the same tensor from every call, as `ClipDecoder` does.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], reuse_output: bool = False):
        super().__init__()
        self.output = _ReusedOutput(reuse_output)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1, 1) * 255)

    def forward(self, pixels: Tensor, flip: Tensor | None = None) -> Tensor:
        x = pixels.to(self.mean.device, non_blocking=True).permute(0, 4, 1, 2, 3)
        out = self.output(tuple(x.shape), x.device)
        if out is None:
            return (x.float() - self.mean) / self.std
        return out.copy_(x).sub_(self.mean).div_(self.std)


def check_sampling(source: CodeSource, out_grid: int, vit_patch: int) -> list[str]:
    """Problems with cutting clips of `out_grid` cells from `source` for a ViT with `vit_patch` pixels."""
    p = []
    if out_grid < 1:
        p.append(f"crop_size must be at least one code patch ({source.patch} px)")
    elif (out_grid * source.patch) % vit_patch:
        size = out_grid * source.patch
        fits = [q for q in (8, 14, 16, 4, 2) if size % q == 0]
        p.append(f"frame size {size} px is not a multiple of the ViT patch {vit_patch}; use --patch-size "
                 f"{fits[0] if fits else 1} or a --crop-size that {vit_patch} divides")
    return p


def out_grid_for(source: CodeSource, crop_size: int | None) -> int:
    """Output grid (cells per side) for a crop of `crop_size` pixels (default: the store's full size)."""
    if crop_size is None:
        return source.grid
    if crop_size % source.patch:
        raise ConfigError([f"crop_size {crop_size} is not a multiple of the code patch {source.patch} "
                           f"(try {crop_size // source.patch * source.patch or source.patch})"], "pretrain config")
    return crop_size // source.patch
