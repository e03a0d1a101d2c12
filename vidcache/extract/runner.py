"""The block runner shared by `extract clips` and `extract codes`.

One pipeline, two jobs. The runner owns everything about *where* work happens and *what is done*:
ranks and blocks (DESIGN.md §2), the decode worker pool with its deadlines, resuming, the order in
which results are consumed, and writing each finished block. A `Job` owns *what* is computed:
the worker-side function (decode + transform one video) and the main-process side (run a model on
batches, assemble the block's arrays).

    job = ClipJob(cfg, backbone, device)          # or CodeJob(...)
    summary = run_extraction(job, manifest, "out.zarr", workers=2)

Distributed: under `torchrun`, every rank runs this same function; rank r owns blocks
i % world == r and nothing else is shared, so no locks are needed. Rank 0 creates the store;
the others wait for it at a barrier.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

from vidcache.cache import DONE, FAILED, ArraySpec, Store
from vidcache.cache.store import storage_errors
from vidcache.device import resolve_device
from vidcache.distributed import DistInfo, barrier, init_distributed
from vidcache.errors import DataError, VidcacheError
from vidcache.extract.pool import TaskResult, WorkerPool
from vidcache.video.decode import decode_problems, remote_filesystem_problems, say_auto_fallback_once

# Importable from here as before: the extraction entry points use them together with the runner.
__all__ = ["Block", "DistInfo", "Job", "Summary", "decode_problems", "init_distributed", "open_store", "resolve_device",
           "run_extraction", "run_extractions"]


@dataclass
class Block:
    """What a job hands back at the end of a block (`Job.end_block`).

    `arrays`: every data array the job declares (`Job.arrays()` names outside `videos/`), one row per
    video of the block; rows of failed videos stay at the fill value. `meta`: the job's own per-video
    metadata (its `videos/<name>` arrays, keyed by `<name>`, e.g. `num_code_frames`); the runner adds
    the sizes every worker reports (`num_frames`, `fps`, `height`, `width`).
    """

    arrays: dict[str, np.ndarray]
    meta: dict[str, np.ndarray] = field(default_factory=dict)


class Job(Protocol):
    """What an extraction computes; the runner decides where and when (see the module docstring).

    Jobs subclass this protocol, so the two members with a default (`static_arrays`, `suggested_block`)
    need not be written out. The runner checks the contract as it writes: a block must hold exactly the
    arrays and metadata `arrays()` declares.
    """

    kind: str  # "clips" | "codes"

    def store_config(self) -> Any: ...  # what the store's config_hash covers
    def arrays(self) -> dict[str, ArraySpec]: ...  # data arrays, and the job's own videos/<name> metadata
    def store_attrs(self) -> dict: ...

    def static_arrays(self) -> dict[str, tuple[np.ndarray, dict]]:
        """Arrays that are not per video, written with the store (name -> (values, attrs)): a code
        store's codebook. Nothing by default."""
        return {}

    def suggested_block(self) -> int | None:
        """Videos per block when the user gives none; None lets the store size it (DESIGN.md §2)."""
        return None

    # Runs in decode workers: (row, path) -> payload with "meta" (the video's sizes) and "num_clips".
    def worker_fn(self) -> Callable[[int, str], dict]: ...
    def begin_block(self, start: int, stop: int) -> None: ...
    def add(self, row: int, payload: dict | None) -> None: ...  # in row order; None for a failed video
    def end_block(self) -> Block: ...


@dataclass
class Summary:
    url: str
    counts: dict
    seconds: float
    videos: int = 0  # videos processed by this call (this rank)
    clips: int = 0
    failures: list = field(default_factory=list)
    restarts: int = 0

    @property
    def videos_per_s(self) -> float:
        return self.videos / max(self.seconds, 1e-9)


def open_store(job: Job, manifest, out: str, *, overwrite: bool = False, videos_per_block: int | None = None,
               dist: DistInfo | None = None, storage_options: dict | None = None) -> Store:
    """Rank 0 creates or resumes the store; other ranks open it after a barrier."""
    dist = dist or DistInfo.from_env()
    with storage_errors(out, "creating or opening the store"):
        return _open_store(job, manifest, out, overwrite=overwrite, videos_per_block=videos_per_block, dist=dist,
                           storage_options=storage_options)


def _open_store(job: Job, manifest, out: str, *, overwrite: bool, videos_per_block: int | None,
                dist: DistInfo, storage_options: dict | None) -> Store:
    store = None
    if dist.rank == 0:
        store = Store.open_or_create(out, job.kind, manifest, job.store_config(), job.arrays(),
                                     overwrite=overwrite, videos_per_block=videos_per_block,
                                     attrs=job.store_attrs(), static_arrays=job.static_arrays() or None,
                                     storage_options=storage_options)
    barrier(dist)
    if store is None:
        store = Store.open_or_create(out, job.kind, manifest, job.store_config(), job.arrays(),
                                     overwrite=False, storage_options=storage_options)
    return store


def run_extraction(job: Job, manifest, out: str, *, workers: int = 2, timeout_s: float | None = 300.0,
                   overwrite: bool = False, videos_per_block: int | None = None,
                   progress: Callable[[int, int, int], None] | None = None,
                   dist: DistInfo | None = None, storage_options: dict | None = None,
                   start_method: str | None = None) -> Summary:
    """Process every pending block this rank owns and write it to the store at `out`.

    `progress(videos_done, videos_total, clips_done)` is called after each video (this rank's
    counts). Videos that fail to decode are recorded as failed with their error; the run goes on.
    """
    return run_extractions([job], manifest, [out], workers=workers, timeout_s=timeout_s, overwrite=overwrite,
                           videos_per_block=videos_per_block, progress=progress, dist=dist,
                           storage_options=storage_options, start_method=start_method)[0]


class _BlockWriter:
    """One store's side of a shared decode pass: feeds its job the rows of its own pending blocks."""

    def __init__(self, job: Job, store: Store, dist: DistInfo):
        self.job, self.store = job, store
        with storage_errors(store.url, "reading which blocks are done"):
            pending = store.pending_blocks(dist.rank, dist.world)
        self.block_of = {b: store.block_range(b) for b in pending}
        self.rows = {r for rng in self.block_of.values() for r in range(*rng)}
        self.summary = Summary(store.url, {}, 0.0)
        self.current: int | None = None
        self.status: list[int] = []
        self.errors: list[str] = []
        self.meta: dict[str, list] = {}
        declared = job.arrays()
        self.data_names = sorted(n for n in declared if not n.startswith("videos/"))
        self.meta_names = sorted(n[len("videos/"):] for n in declared if n.startswith("videos/"))

    def consume(self, res: TaskResult) -> None:
        row = res.key
        if row not in self.rows:
            return
        b = row // self.store.videos_per_block
        if b != self.current:
            self.current = b
            self.job.begin_block(*self.block_of[b])
            self.status, self.errors = [], []
            self.meta = {k: [] for k in ("num_frames", "fps", "height", "width")}
        _consume(self.job, res, self.status, self.errors, self.meta)
        self.summary.videos += 1
        self.summary.clips += int(res.value.get("num_clips", 0)) if res.ok and self.status[-1] == DONE else 0
        if row == self.block_of[b][1] - 1:
            block = self.job.end_block()
            self._check(block)
            with storage_errors(self.store.url, f"writing block {b}"):
                self.store.write_block(b, block.arrays, self.status, self.errors, meta={**self.meta, **block.meta})

    def _check(self, block: Block) -> None:
        """The job kept the protocol: its block holds what its `arrays()` declares, nothing else."""
        name = type(self.job).__name__
        if not isinstance(block, Block):
            raise VidcacheError(f"{name}.end_block returned {type(block).__name__}, not a runner.Block")
        if sorted(block.arrays) != self.data_names or sorted(block.meta) != self.meta_names:
            raise VidcacheError(f"{name}.end_block gave arrays {sorted(block.arrays)} and metadata "
                                f"{sorted(block.meta)}; its arrays() declare {self.data_names} and "
                                f"{self.meta_names}")


def run_extractions(jobs: list[Job], manifest, outs: list[str], *, workers: int = 2,
                    timeout_s: float | None = 300.0, overwrite: bool = False,
                    videos_per_block: int | None = None,
                    progress: Callable[[int, int, int], None] | None = None,
                    dist: DistInfo | None = None, storage_options: dict | None = None,
                    start_method: str | None = None) -> list[Summary]:
    """Fill several stores of one manifest from ONE decode pass: job i writes the store at outs[i].

    Every job must decode and transform videos identically (equal `worker_fn()`), e.g. checkpoints
    of one training run: each video is decoded once and its clips are fed to every job whose store
    still needs that video. Stores keep their own block sizes and resume independently; a video
    one job fails on (e.g. a model that cannot take its frames) is failed in that store only.
    `progress(videos_decoded, videos_to_decode, clips_decoded)` counts the shared decode pass.
    """
    if len(jobs) != len(outs) or not jobs:
        raise VidcacheError(f"run_extractions needs one output per job (got {len(jobs)} jobs, {len(outs)} outputs)")
    if len({str(o) for o in outs}) != len(outs):
        raise VidcacheError("run_extractions got the same output store twice; give every job its own store")
    worker = jobs[0].worker_fn()
    for job in jobs[1:]:
        other = job.worker_fn()
        if type(other) is not type(worker) or vars(other) != vars(worker):
            raise VidcacheError("jobs sharing one decode pass must preprocess videos identically "
                                "(same protocol, clip length, stride, image size, mean/std, crop, decoder)")
    missing = remote_filesystem_problems(manifest.paths)
    if missing:  # before any store is created or written
        raise DataError("; ".join(missing))
    dist = dist or DistInfo.from_env()
    t0 = time.perf_counter()
    writers = [_BlockWriter(job, open_store(job, manifest, out, overwrite=overwrite,
                                             videos_per_block=videos_per_block, dist=dist,
                                             storage_options=storage_options), dist)
               for job, out in zip(jobs, outs)]
    rows = sorted(set().union(*(w.rows for w in writers)))
    paths = manifest.paths

    def tasks():
        for r in rows:
            yield r, (r, paths[r])

    decoded = clips = 0
    restarts = 0
    if rows and getattr(worker, "decoder", None) == "auto":
        say_auto_fallback_once()  # "auto" prefers torchcodec: say once why it cannot be used here
    if rows:
        with WorkerPool(worker, workers=workers, timeout_s=timeout_s, start_method=start_method) as pool:
            for res in pool.imap(tasks()):
                for w in writers:
                    w.consume(res)
                decoded += 1
                clips += int(res.value.get("num_clips", 0)) if res.ok else 0
                if progress is not None:
                    progress(decoded, len(rows), clips)
            restarts = pool.restarts
    barrier(dist)
    out = []
    for w in writers:
        s = w.summary
        s.restarts = restarts
        with storage_errors(w.store.url, "reading the final counts"):
            s.counts = w.store.counts()
            s.failures = w.store.info()["failures"] if s.counts["failed"] else []
        s.seconds = time.perf_counter() - t0
        out.append(s)
    return out


def _consume(job: Job, res: TaskResult, status: list, errors: list, meta: dict) -> None:
    info = res.value.get("meta", {}) if res.ok else {}
    for k in meta:
        meta[k].append(info.get(k, 0))
    if res.ok:
        try:
            job.add(res.key, res.value)
            status.append(DONE)
            errors.append("")
            return
        except VidcacheError as e:  # e.g. a video whose frames the model cannot take
            res = TaskResult(res.key, False, error=str(e))
    job.add(res.key, None)
    status.append(FAILED)
    errors.append(res.error or "unknown error")
