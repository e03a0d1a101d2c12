"""The store: one zarr v3 group holding one dataset x one extraction config (DESIGN.md §2).

Two kinds share this one API:
- a *clip store* (`kind="clips"`): pooled clip embeddings, crop boxes and optional tokens;
- a *code store* (`kind="codes"`): k-means patch codes of raw frames.

Layout and writing rules, in short:
- Rows are videos, in manifest order. Per-video metadata lives under `videos/`, data under
  `clips/` or `codes/`.
- The unit of work is a *block* of `videos_per_block` consecutive videos. Every array's chunk length
  along the video axis divides the block, so a block never shares a chunk with another block:
  writers that own different blocks never touch the same object, on disk or on object storage,
  and need no locks.
- A block's data is written before its `videos/status` rows. `status` is the only record of what
  is finished; a block whose data cannot be read back counts as not done and is redone.

Readers load whole chunks (`load`), never one random row at a time: zarr's per-row gathers are
orders of magnitude slower than contiguous reads.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import zarr

import vidcache
from vidcache.config import config_hash as _hash
from vidcache.config import diff_fields, hashed_dict, to_dict
from vidcache.errors import DataError, StoreError, VidcacheError, missing_filesystem

# Schema 2 adds named features (`clips/features/<name>`, attribute `features`); a schema-1 store is
# a schema-2 store whose only feature is `mean` (`clips/emb`), so both open and resume.
SCHEMA = 2
READS = (1, 2)
KINDS = ("clips", "codes")
PENDING, DONE, FAILED = 0, 1, 2
STATUS_NAMES = {PENDING: "pending", DONE: "done", FAILED: "failed"}
# Group attribute present only while a store is being created (see `Store.create`).
CREATING = "vidcache_creating"
# A code store's codebook array (DESIGN.md §2).
CODEBOOK = "codes/codebook"

# Chunks of a few MB read fastest with zarr 3 (many small chunks cost per-chunk overhead; see
# DESIGN.md §2), while a block is also the unit of redone work after a kill: 8 MiB balances both.
TARGET_BLOCK_BYTES = 8 << 20
MIN_BLOCK, MAX_BLOCK = 8, 4096
# Slabs read at once by `load`: a few chunks, so zarr fetches them concurrently, yet small enough
# that the rows picked from a slab are still in cache. Export copies in larger slabs.
SLAB_BYTES = 32 << 20
LOAD_SLAB_BYTES = 256 << 20


@dataclass(frozen=True)
class ArraySpec:
    """A per-video data array: every row has `shape`; `videos_per_chunk=None` means one block."""

    shape: tuple[int, ...]
    dtype: str
    videos_per_chunk: int | None = None
    compress: bool = False  # zstd; off for embeddings (it made loading 2-3x slower), on for codes
    fill_value: Any = 0
    dims: tuple[str, ...] | None = None  # names of the axes after `videos` (zarr dimension_names)


# zarr v3 `dimension_names` of the per-video axes after the first ("videos"), by array name, so that
# xarray and other zarr clients see labelled arrays. A name is shared only by axes that always have
# one length within a group (xarray refuses a dimension with two sizes), and no axis is named like an
# array of its group (xarray would take that array for the axis' coordinate): hence "token", "frame".
# An array not listed gets "<leaf>_<axis>".
DIMENSION_NAMES = {
    "clips/emb": ("clips", "dim"),
    "clips/box": ("clips", "coord"),
    "clips/tokens": ("clips", "token", "token_dim"),  # token_dim: D, or M PQ sub-codes
    "clips/frame_tokens": ("frame", "grid_y", "grid_x", "frame_token_dim"),
    "clips/frame_index": ("frame",),
    "codes/frames": ("frame", "grid_y", "grid_x"),
}


def dimension_names(name: str, spec: ArraySpec) -> tuple[str, ...]:
    """("videos", ...) for a per-video array: the spec's own names, the table's, or generic ones."""
    dims = spec.dims or DIMENSION_NAMES.get(name)
    if dims is None or len(dims) != len(spec.shape):
        leaf = name.split("/")[-1]
        dims = tuple(f"{leaf}_{i + 1}" for i in range(len(spec.shape)))
    return ("videos", *dims)


def default_videos_per_block(num_videos: int, arrays: dict[str, ArraySpec]) -> int:
    """Block size so the largest block-chunked array's chunk is about TARGET_BLOCK_BYTES."""
    per_video = max([int(np.prod(s.shape)) * np.dtype(s.dtype).itemsize
                     for s in arrays.values() if s.videos_per_chunk is None] or [1024])
    b = 2 ** round(math.log2(max(1.0, TARGET_BLOCK_BYTES / per_video)))
    b = int(min(MAX_BLOCK, max(MIN_BLOCK, b)))
    # No point in a block far larger than the data set.
    return min(b, max(MIN_BLOCK, 2 ** math.ceil(math.log2(max(1, num_videos)))))


def _is_url(url: str) -> bool:
    return "://" in str(url) and not str(url).startswith("file://")


def _local_path(url: str) -> Path | None:
    s = str(url)
    if s.startswith("file://"):
        return Path(s[len("file://"):])
    return None if _is_url(s) else Path(s)


def _exists(url: str, storage_options: dict | None) -> bool:
    local = _local_path(url)
    if local is not None:
        return (local / "zarr.json").is_file()
    import fsspec

    fs, path = fsspec.core.url_to_fs(str(url), **(storage_options or {}))
    return fs.exists(f"{path.rstrip('/')}/zarr.json")


def remote_protocols(urls: Iterable[str]) -> list[str]:
    """The fsspec protocols (s3, gs, ...) of the URLs that are not local paths or file:// URLs."""
    from fsspec.core import split_protocol

    return sorted({split_protocol(str(u))[0] for u in urls if _is_url(str(u))})


def use_storage_options(options: dict, urls: Iterable[str]) -> list[str]:
    """Make `options` the fsspec defaults of every remote protocol among `urls`; returns those protocols.

    They apply to every filesystem of that protocol this process (and the decode workers it forks)
    opens: the stores, and videos fetched from the same kind of storage. They are never written into
    a store or a config. Credentials also come from where the backend looks itself (for s3fs:
    AWS_* environment variables, ~/.aws/credentials and ~/.aws/config, including `endpoint_url`).
    """
    import fsspec.config

    protocols = remote_protocols(urls)
    if options and not protocols:
        raise StoreError("--storage-option applies to fsspec URLs (s3://..., gs://...), and no store or "
                         "video of this command is one; drop the option or give a URL")
    for proto in protocols:
        fsspec.config.conf.setdefault(proto, {}).update(options)
    return protocols


class storage_errors:
    """Turn a failure of the storage backend (server gone, access denied) into one StoreError line."""

    def __init__(self, url: str, doing: str):
        self.url, self.doing = str(url), doing

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, err, tb) -> bool:
        if err is None or isinstance(err, (VidcacheError, KeyboardInterrupt, SystemExit)) \
                or not isinstance(err, Exception):
            return False
        missing = missing_filesystem(self.url, err)
        if missing:
            raise StoreError(missing) from None
        text = f"{type(err).__name__}: {err}".replace("\n", " ").strip()[:300]
        raise StoreError(f"{self.url}: {self.doing} failed ({text}); everything written before is kept: "
                         f"rerun the same command to resume") from None


def _hashed(config: Any) -> dict:
    return hashed_dict(config) if dataclasses.is_dataclass(config) else to_dict(config)


def _creating_marker(url: str, storage_options: dict | None) -> dict | None:
    """The `creating` marker of a group whose creation did not finish, else None."""
    try:
        group = zarr.open_group(_zarr_target(url), mode="r", storage_options=storage_options)
    except Exception:
        return None
    attrs = group.attrs.asdict()
    marker = attrs.get(CREATING)
    return marker if isinstance(marker, dict) and "vidcache" not in attrs else None


def _zarr_target(url: str):
    local = _local_path(url)
    return str(local) if local is not None else str(url)


@dataclass(frozen=True)
class StoredCodebook:
    """A code store's codebook as stored: `centroids` [K, p*p*3] float32 and the array's attributes
    (`patch`, `height`, `width`, `fps`, `max_frames`, `codec`, ...; docs/store.md)."""

    centroids: np.ndarray
    attrs: dict


@dataclass
class VerifyReport:
    ok: bool
    problems: list[str]
    checked_rows: int
    failed_rows: int = 0
    pending_rows: int = 0

    def __str__(self) -> str:
        if self.ok:
            rest = [f"{n} {what}" for n, what in ((self.failed_rows, "failed (each with its error)"),
                                                  (self.pending_rows, "pending")) if n]
            return f"ok: {self.checked_rows} done rows checked" + (f"; {', '.join(rest)}" if rest else "")
        return f"{len(self.problems)} problem(s): " + "; ".join(self.problems[:20])


class Store:
    """An open store. Create with `Store.create`, open with `Store.open`, or `Store.open_or_create`."""

    def __init__(self, group: zarr.Group, url: str, storage_options: dict | None = None):
        self.group = group
        self.url = str(url)
        self.storage_options = storage_options
        meta = dict(group.attrs.get("vidcache") or {})
        self.kind: str = meta.get("kind", "")
        self.attrs: dict = group.attrs.asdict()
        self.config: dict = self.attrs.get("config", {})
        self.config_hash: str = self.attrs.get("config_hash", "")
        self.classes: list[str] = list(self.attrs.get("classes", []))
        self.videos_per_block: int = int(self.attrs.get("videos_per_block", 1))
        self.num_videos: int = int(group["videos/status"].shape[0])

    # ------------------------------------------------------------------ creation and opening
    @staticmethod
    def exists(url: str | Path, storage_options: dict | None = None) -> bool:
        """Whether a zarr group is at `url` (a store, or a creation to complete); opens nothing."""
        return _exists(str(url), storage_options)

    @classmethod
    def create(cls, url: str | Path, kind: str, manifest, config: Any, arrays: dict[str, ArraySpec],
               *, videos_per_block: int | None = None, attrs: dict | None = None,
               static_arrays: dict[str, tuple[np.ndarray, dict]] | None = None,
               overwrite: bool = False, storage_options: dict | None = None) -> "Store":
        """Create a store for `manifest` with preallocated `arrays` (names like "clips/emb").

        `config` is the extraction config (a dataclass or dict); its hashed fields give `config_hash`.
        `static_arrays` are small arrays that are not per video (a codebook): name -> (values, attrs).
        An existing store at `url` is refused unless `overwrite=True`.

        Creation is a kill point too (over S3 it takes seconds): the group is first written with a
        `creating` marker naming the config and manifest, then every array, and only then the
        attributes that make it a store, in one metadata write. A group that still carries the
        marker is an interrupted creation, which `open_or_create` redoes for the same config.
        """
        url = str(url)
        if kind not in KINDS:
            raise StoreError(f"unknown store kind {kind!r}; expected one of {KINDS}")
        if _exists(url, storage_options) and not overwrite:
            raise StoreError(f"a store already exists at {url}; open it, or pass overwrite=True "
                             f"(--overwrite) to replace it")
        V = len(manifest)
        vpb = int(videos_per_block or default_videos_per_block(V, arrays))
        problems = []
        for name, spec in arrays.items():
            if spec.videos_per_chunk is not None and (spec.videos_per_chunk < 1 or vpb % spec.videos_per_chunk):
                problems.append(f"{name}: videos_per_chunk {spec.videos_per_chunk} must divide the block ({vpb})")
            if name.startswith("videos/") and spec.shape:
                problems.append(f"{name}: extra per-video metadata under videos/ must be scalar per video")
        if problems:
            raise StoreError("; ".join(problems))

        full = to_dict(config)
        hashed = _hashed(config)
        final_attrs = {
            **(attrs or {}),
            "vidcache": {"schema": SCHEMA, "kind": kind, "version": vidcache.__version__},
            "config": full,
            "config_hashed": hashed,
            "config_hash": _hash(hashed),
            "classes": list(manifest.classes),
            "videos_per_block": vpb,
            "manifest_digest": manifest_digest(manifest),
            "data_arrays": sorted(n for n in arrays if not n.startswith("videos/")),
        }
        marker = {"schema": SCHEMA, "kind": kind, "config_hash": final_attrs["config_hash"],
                  "config_hashed": hashed, "manifest_digest": final_attrs["manifest_digest"]}
        group = zarr.open_group(_zarr_target(url), mode="w", storage_options=storage_options,
                                attributes={CREATING: marker})
        block = (vpb,)
        meta_arrays = {
            "videos/path": (np.asarray(manifest.paths, dtype=str), str),
            "videos/label": (np.asarray(manifest.labels, dtype=np.int32), "int32"),
            "videos/split": (np.asarray(manifest.splits, dtype=str), str),
        }
        if getattr(manifest, "masks", None):
            # Mask folders of dense ground truth (DAVIS layout), read by the dense probes.
            meta_arrays["videos/masks"] = (np.asarray(manifest.masks, dtype=str), str)
        videos_dim = ("videos",)
        for name, (values, dtype) in meta_arrays.items():
            arr = group.create_array(name, shape=(V,), chunks=block, dtype=dtype, compressors=None,
                                     dimension_names=videos_dim, **({} if dtype is str else {"fill_value": 0}))
            arr[:] = values
        # Filled by the writer of each block: sizes are only known once the video is opened.
        for name, dtype in [("videos/num_frames", "int32"), ("videos/fps", "float32"),
                            ("videos/height", "int32"), ("videos/width", "int32")]:
            group.create_array(name, shape=(V,), chunks=block, dtype=dtype, fill_value=0, compressors=None,
                               dimension_names=videos_dim)
        group.create_array("videos/status", shape=(V,), chunks=block, dtype="int8", fill_value=PENDING,
                           compressors=None, dimension_names=videos_dim)
        group.create_array("videos/error", shape=(V,), chunks=block, dtype=str, compressors=None,
                           dimension_names=videos_dim)
        for name, spec in arrays.items():
            vpc = spec.videos_per_chunk or vpb
            kw = {} if spec.compress else {"compressors": None}
            group.create_array(name, shape=(V, *spec.shape), chunks=(vpc, *spec.shape), dtype=spec.dtype,
                               fill_value=spec.fill_value, dimension_names=dimension_names(name, spec), **kw)
        store = cls(group, url, storage_options)
        for name, (values, arr_attrs) in (static_arrays or {}).items():
            store.add_array(name, np.asarray(values), arr_attrs)
        # Last: one metadata write replaces the marker with the attributes of a finished store.
        group.attrs.put(final_attrs)
        return cls(group, url, storage_options)

    @classmethod
    def open(cls, url: str | Path, mode: str = "r", kind: str | None = None,
             storage_options: dict | None = None) -> "Store":
        """Open an existing store, checking its schema version and kind."""
        url = str(url)
        if mode not in ("r", "r+"):
            raise StoreError(f"mode must be 'r' or 'r+', not {mode!r}")
        with storage_errors(url, "opening the store"):
            exists = _exists(url, storage_options)
        if not exists:
            raise StoreError(f"not a vidcache store: {url} (no zarr.json there; create one with "
                             f"`vidcache extract clips` or `vidcache extract codes`)")
        try:
            group = zarr.open_group(_zarr_target(url), mode=mode, storage_options=storage_options)
        except Exception as e:  # a zarr.json that is not a group, or unreadable
            raise StoreError(f"not a vidcache store: {url} ({type(e).__name__}: {e})") from None
        meta = group.attrs.get("vidcache")
        if not isinstance(meta, dict) or "schema" not in meta:
            if isinstance(group.attrs.get(CREATING), dict):
                raise StoreError(f"{url} is an unfinished store: its creation was interrupted; rerun the "
                                 f"extraction that made it to complete it, or pass --overwrite to replace it")
            raise StoreError(f"not a vidcache store: {url} (zarr group without 'vidcache' attributes)")
        if meta["schema"] not in READS:
            raise StoreError(f"{url} has store schema {meta['schema']}, this vidcache reads schemas "
                             f"{', '.join(map(str, READS))}; "
                             f"re-extract it or use vidcache {meta.get('version', '?')}")
        if kind is not None and meta.get("kind") != kind:
            raise StoreError(f"{url} is a {meta.get('kind')!r} store, expected a {kind!r} store")
        return cls(group, url, storage_options)

    @classmethod
    def open_or_create(cls, url: str | Path, kind: str, manifest, config: Any, arrays: dict[str, ArraySpec],
                       *, overwrite: bool = False, **create_kw) -> "Store":
        """Resume into an existing store if it was made with the same config and manifest, else create.

        A store made with another config is refused with the differing fields named; `overwrite=True`
        replaces it instead.
        """
        url = str(url)
        storage_options = create_kw.get("storage_options")
        if overwrite or not _exists(url, storage_options):
            return cls.create(url, kind, manifest, config, arrays, overwrite=overwrite, **create_kw)
        hashed = _hashed(config)
        marker = _creating_marker(url, storage_options)
        if marker is not None:  # an interrupted creation: redo it if it was this one
            if marker.get("kind") != kind or marker.get("config_hash") != _hash(hashed):
                diffs = diff_fields(marker.get("config_hashed", {}), hashed)
                raise StoreError(f"{url} is an unfinished store of another config (differs in: "
                                 f"{', '.join(diffs) or 'kind or hash'}); use another output path, or "
                                 f"--overwrite to replace it")
            if marker.get("manifest_digest") != manifest_digest(manifest):
                raise StoreError(f"{url} is an unfinished store of another manifest; use another output "
                                 f"path, or --overwrite to replace it")
            # Nothing but creation ever ran there (blocks are written only into finished stores).
            return cls.create(url, kind, manifest, config, arrays, overwrite=True, **create_kw)
        store = cls.open(url, mode="r+", kind=kind, storage_options=storage_options)
        if _hash(hashed) != store.config_hash:
            diffs = diff_fields(store.attrs.get("config_hashed", {}), hashed)
            raise StoreError(f"{url} was made with another config (differs in: {', '.join(diffs) or 'hash'}); "
                             f"use another output path, or --overwrite to replace it")
        if manifest_digest(manifest) != store.attrs.get("manifest_digest"):
            raise StoreError(f"{url} was made from another manifest (paths, labels or splits differ); "
                             f"use another output path, or --overwrite to replace it")
        for name, spec in arrays.items():
            if name not in store.group or tuple(store.group[name].shape[1:]) != tuple(spec.shape):
                raise StoreError(f"{url}: array {name} is missing or has another shape; use --overwrite")
        return store

    # ------------------------------------------------------------------ blocks
    @property
    def num_blocks(self) -> int:
        return math.ceil(self.num_videos / self.videos_per_block)

    def block_range(self, block: int) -> tuple[int, int]:
        start = block * self.videos_per_block
        return start, min(start + self.videos_per_block, self.num_videos)

    def blocks_for(self, rank: int = 0, world: int = 1) -> list[int]:
        """The blocks rank `rank` of `world` writers owns: i % world == rank."""
        if not (0 <= rank < world):
            raise StoreError(f"rank {rank} is not in [0, {world})")
        return list(range(rank, self.num_blocks, world))

    def status(self) -> np.ndarray:
        """`videos/status` as int8 [V]; a status chunk that cannot be read counts as pending."""
        arr = self.group["videos/status"]
        try:
            return np.asarray(arr[:], dtype=np.int8)
        except Exception:
            pass
        out = np.zeros(self.num_videos, dtype=np.int8)
        for b in range(self.num_blocks):
            s, e = self.block_range(b)
            try:
                out[s:e] = arr[s:e]
            except Exception:
                out[s:e] = PENDING
        return out

    def block_done(self, block: int, check_data: bool = True) -> bool:
        """True when every video of the block is done or failed and (optionally) its data reads back."""
        s, e = self.block_range(block)
        try:
            st = self.group["videos/status"][s:e]
        except Exception:
            return False
        if not np.all(st != PENDING):
            return False
        if check_data:
            try:
                for name in self.data_arrays:
                    self.group[name][s:e]
                self.group["videos/error"][s:e]
            except Exception:
                return False
        return True

    def pending_blocks(self, rank: int = 0, world: int = 1, check_data: bool = True) -> list[int]:
        """Blocks of this rank still to (re)do: some video pending, or a chunk that does not read back."""
        return [b for b in self.blocks_for(rank, world) if not self.block_done(b, check_data)]

    @property
    def data_arrays(self) -> list[str]:
        return list(self.attrs.get("data_arrays", []))

    @property
    def schema(self) -> int:
        return int((self.attrs.get("vidcache") or {}).get("schema", SCHEMA))

    @property
    def features(self) -> list[str]:
        """Named clip features this store holds (docs/store.md); a schema-1 store holds only `mean`."""
        if self.kind != "clips":
            return []
        return list(self.attrs.get("features") or ["mean"])

    def videos(self, rows: Sequence[int] | slice | None = None) -> dict[str, np.ndarray]:
        """Per-video metadata (path, label, split, sizes, status, error) for `rows` (all by default)."""
        sel = slice(None) if rows is None else rows
        out = {}
        for name in ("path", "label", "split", "num_frames", "fps", "height", "width", "error"):
            out[name] = np.asarray(self.group[f"videos/{name}"][:])[sel]
        for name in ("masks", "num_token_frames", "grid_h", "grid_w", "num_code_frames"):  # in some stores only
            if f"videos/{name}" in self.group:
                out[name] = np.asarray(self.group[f"videos/{name}"][:])[sel]
        out["status"] = self.status()[sel]
        return out

    def splits(self) -> np.ndarray:
        """The split label of every video (`videos/split`), a numpy string array [V] in manifest order
        (numpy's variable-width StringDType, as zarr reads it back)."""
        return np.asarray(self.group["videos/split"][:])

    def codebook(self) -> StoredCodebook:
        """The code store's `codes/codebook` centroids (float32, 0..255) and their attributes.

        Raw data only (the store knows no codec): `vidcache.codec.Codebook.from_store(store)` builds
        the codebook object from it. A store without a codebook (a clip store) is refused.
        """
        if CODEBOOK not in self.group:
            raise StoreError(f"{self.url} is a {self.kind!r} store without {CODEBOOK}; codebooks live in code "
                             f"stores: give a store made by `vidcache extract codes`")
        arr = self.group[CODEBOOK]
        return StoredCodebook(np.asarray(arr[...], dtype=np.float32), dict(arr.attrs.asdict()))

    def write_block(self, block: int, data: dict[str, np.ndarray], status: Sequence[int],
                    errors: Sequence[str] | None = None, meta: dict[str, Sequence] | None = None) -> None:
        """Write one whole block: data arrays and per-video sizes first, `status` last.

        `data[name]` has one row per video of the block (rows of failed videos are left at the fill
        value). `status` holds DONE or FAILED for every video; `errors` the reason of each failure.
        """
        s, e = self.block_range(block)
        n = e - s
        status = np.asarray(status, dtype=np.int8)
        errors = list(errors) if errors is not None else [""] * n
        if status.shape != (n,) or len(errors) != n:
            raise StoreError(f"block {block} has {n} videos; got {status.shape[0]} status and {len(errors)} errors")
        if np.any(status == PENDING):
            raise StoreError("write_block needs a final status (done or failed) for every video")
        for row, (st, err) in enumerate(zip(status, errors)):
            if st == FAILED and not err:
                raise StoreError(f"video {s + row} is marked failed without an error message")
        for name, values in data.items():
            arr = self.group[name]
            values = np.asarray(values)
            if values.shape != (n, *arr.shape[1:]):
                raise StoreError(f"{name}: block {block} needs shape {(n, *arr.shape[1:])}, got {values.shape}")
            arr[s:e] = values.astype(arr.dtype, copy=False)
        for name, values in (meta or {}).items():
            self.group[f"videos/{name}"][s:e] = np.asarray(values)
        self.group["videos/error"][s:e] = np.asarray([str(x) for x in errors], dtype=str)
        # Status last: a kill before this line leaves the block pending, and it is redone whole.
        self.group["videos/status"][s:e] = status

    # ------------------------------------------------------------------ reading
    def rows(self, split: str | None = None, status: str | int | None = "done") -> np.ndarray:
        """Row indices for a split (all splits when None) and a status ("done", "failed", "pending", None=any)."""
        keep = np.ones(self.num_videos, dtype=bool)
        if split is not None:
            splits = self.splits()
            keep &= splits == split
            if not keep.any():
                present = ", ".join(sorted(set(splits.tolist())))
                raise DataError(f"split {split!r} is not in {self.url}; splits present: {present}")
        if status is not None:
            code = {"pending": PENDING, "done": DONE, "failed": FAILED}.get(status, status)
            keep &= self.status() == code
        return np.flatnonzero(keep)

    def read_rows(self, name: str, rows: np.ndarray, decode: bool = True) -> np.ndarray:
        """Rows of one array, read as whole-chunk slabs (never row-by-row gathers).

        Slabs of a few chunks are read and filtered one after another, so each slab is selected
        while it is still in cache: this beats reading everything and indexing once afterwards.
        An array of PQ codes (attribute `pq_codebook`, see `vidcache.cache.pq`) is decoded to
        float16 tokens, in pieces of a few rows, unless `decode=False`.
        """
        book = self.group[name].attrs.get("pq_codebook") if decode else None
        if book:
            from vidcache.cache.pq import decode as pq_decode

            codebook = self._codebook(book)
            rows = np.asarray(rows, dtype=np.int64)
            arr = self.group[name]
            out = np.empty((len(rows), *arr.shape[1:-1], codebook.shape[0] * codebook.shape[2]), np.float16)
            step = max(arr.chunks[0], 64)
            for s in range(0, len(rows), step):
                out[s:s + step] = pq_decode(self.read_rows(name, rows[s:s + step], decode=False), codebook)
            return out
        arr = self.group[name]
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *arr.shape[1:]), dtype=arr.dtype)
        if len(rows) == 0:
            return out
        if rows[-1] - rows[0] + 1 == len(rows) and np.all(np.diff(rows) == 1):  # contiguous: one read
            out[...] = arr[int(rows[0]):int(rows[-1]) + 1]
            return out
        chunk = arr.chunks[0]
        row_bytes = max(1, int(np.prod(arr.shape[1:])) * arr.dtype.itemsize)
        slab = max(chunk, (SLAB_BYTES // row_bytes) // chunk * chunk)
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        raw = self._raw_chunk_reader(name)
        if raw is not None:
            # One reused chunk buffer: file -> buffer -> out, the same two copies as np.load + a mask.
            buf = np.empty((chunk, *arr.shape[1:]), dtype=arr.dtype)
            bounds = np.searchsorted(sorted_rows, np.arange(0, arr.shape[0] + chunk, chunk))
            for c in range(len(bounds) - 1):
                i, j = int(bounds[c]), int(bounds[c + 1])
                if i < j:
                    raw(c, buf)
                    out[order[i:j]] = buf[sorted_rows[i:j] - c * chunk]
            return out
        spans = []
        bounds = np.searchsorted(sorted_rows, np.arange(0, arr.shape[0] + slab, slab))
        for k in range(len(bounds) - 1):
            i, j = int(bounds[k]), int(bounds[k + 1])
            if i < j:
                lo = int(sorted_rows[i]) // chunk * chunk
                hi = min(arr.shape[0], -(-(int(sorted_rows[j - 1]) + 1) // chunk) * chunk)
                spans.append((i, j, lo, hi))
        # Fetch the next slab while the current one is filtered: I/O and copying overlap.
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(arr.__getitem__, slice(spans[0][2], spans[0][3]))
            for n, (i, j, lo, hi) in enumerate(spans):
                slab_values = pending.result()
                if n + 1 < len(spans):
                    pending = pool.submit(arr.__getitem__, slice(spans[n + 1][2], spans[n + 1][3]))
                out[order[i:j]] = slab_values[sorted_rows[i:j] - lo]
        return out

    def _codebook(self, name: str) -> np.ndarray:
        cache = self.__dict__.setdefault("_codebooks", {})
        if name not in cache:
            cache[name] = np.asarray(self.group[name][...], dtype=np.float32)
        return cache[name]

    def _raw_chunk_reader(self, name: str):
        """A faster chunk reader for uncompressed arrays on local disk, or None to use zarr's.

        With only the `bytes` codec (little-endian) a zarr v3 chunk file is exactly the C-order bytes
        of a full chunk (edge chunks are stored padded), so it can be read straight into a numpy
        buffer, skipping zarr's per-chunk async machinery. A missing chunk file means the fill value.
        Any other layout (compressors, sharding, object storage) uses zarr.
        """
        local = _local_path(self.url)
        arr = self.group[name]
        meta = arr.metadata
        try:
            codecs = [c.to_dict() for c in meta.codecs]
            separator = meta.chunk_key_encoding.separator
            regular = type(meta.chunk_grid).__name__ == "RegularChunkGrid"
            encoding = meta.chunk_key_encoding.name
        except AttributeError:
            return None
        little = np.dtype(arr.dtype).byteorder in ("<", "=", "|") and np.little_endian
        if (local is None or not regular or encoding != "default" or not little
                or codecs != [{"name": "bytes", "configuration": {"endian": "little"}}]
                or tuple(arr.chunks[1:]) != tuple(arr.shape[1:])):
            return None
        tail = [str(0)] * (arr.ndim - 1)

        def read(c: int, buf: np.ndarray) -> None:
            key = separator.join(["c", str(c), *tail])
            try:
                with open(local / name / key, "rb") as f:
                    n = f.readinto(memoryview(buf).cast("B"))
                    extra = f.read(1)
            except FileNotFoundError:
                buf[...] = arr.fill_value
                return
            if n != buf.nbytes or extra:
                raise StoreError(f"{name}: chunk {key} is torn ({n} bytes, expected {buf.nbytes}); "
                                 f"redo its block (rerun the extraction to resume)")

        return read

    def load(self, arrays: Iterable[str] = ("emb", "box"), split: str | None = None,
             status: str | None = "done") -> dict[str, np.ndarray]:
        """Load arrays for the done videos of a split into memory.

        Names may be short (`emb`, `box`, `tokens`, `frames`) or full (`clips/emb`). Returns a dict with
        "index" (store rows), "label" and each array under its short name.
        """
        rows = self.rows(split, status)
        out: dict[str, np.ndarray] = {"index": rows}
        labels = np.asarray(self.group["videos/label"][:])
        out["label"] = labels[rows]
        for name in arrays:
            full = self._resolve(name)
            out[name.split("/")[-1]] = self.read_rows(full, rows)
        return out

    def _resolve(self, name: str) -> str:
        if name in self.group and "/" in name:
            return name
        for prefix in ("clips/", "codes/", "videos/"):
            if f"{prefix}{name}" in self.group:
                return f"{prefix}{name}"
        have = ", ".join(self.data_arrays)
        raise StoreError(f"{self.url} has no array {name!r}; it has: {have}")

    # ------------------------------------------------------------------ reports
    def counts(self) -> dict[str, int]:
        st = self.status()
        return {STATUS_NAMES[k]: int((st == k).sum()) for k in (DONE, FAILED, PENDING)}

    def nbytes_on_disk(self) -> int:
        local = _local_path(self.url)
        if local is not None:
            return sum(f.stat().st_size for f in local.rglob("*") if f.is_file())
        import fsspec

        fs, path = fsspec.core.url_to_fs(self.url, **(self.storage_options or {}))
        return int(fs.du(path, total=True))

    def info(self) -> dict:
        """Counts (done/failed/pending, per split), bytes on disk, arrays, config and failures."""
        st = self.status()
        splits = self.splits()
        per_split = {}
        for sp in sorted(set(splits.tolist())):
            m = splits == sp
            per_split[sp] = {STATUS_NAMES[k]: int((st[m] == k).sum()) for k in (DONE, FAILED, PENDING)}
        failed_rows = np.flatnonzero(st == FAILED)
        failures = []
        if len(failed_rows):
            paths = np.asarray(self.group["videos/path"][:])
            errs = np.asarray(self.group["videos/error"][:])
            failures = [{"row": int(r), "path": str(paths[r]), "error": str(errs[r])} for r in failed_rows]
        return {
            "url": self.url,
            "kind": self.kind,
            "schema": SCHEMA,
            "version": self.attrs.get("vidcache", {}).get("version"),
            "num_videos": self.num_videos,
            "videos_per_block": self.videos_per_block,
            "counts": self.counts(),
            "splits": per_split,
            "classes": self.classes,
            "arrays": {name: {"shape": list(self.group[name].shape), "dtype": str(self.group[name].dtype),
                              "chunks": list(self.group[name].chunks)} for name in self.data_arrays},
            "bytes_on_disk": self.nbytes_on_disk(),
            "config_hash": self.config_hash,
            "config": self.config,
            "failures": failures,
            "extra": {k: v for k, v in self.attrs.items()
                      if k not in ("vidcache", "config", "config_hashed", "config_hash", "classes",
                                   "videos_per_block", "manifest_digest", "data_arrays")},
        }

    def verify(self) -> VerifyReport:
        """Every done row is finite and has data; shapes match; every failed row has an error."""
        problems: list[str] = []
        st = self.status()
        V = self.num_videos
        for name in self.data_arrays:
            if name not in self.group:
                problems.append(f"array {name} is missing")
            elif self.group[name].shape[0] != V:
                problems.append(f"{name} has {self.group[name].shape[0]} rows, expected {V}")
        for name in ("path", "label", "split", "status", "error"):
            if self.group[f"videos/{name}"].shape != (V,):
                problems.append(f"videos/{name} has shape {self.group[f'videos/{name}'].shape}, expected ({V},)")
        done = np.flatnonzero(st == DONE)
        for name in self.data_arrays:
            arr = self.group[name]
            try:
                values = self.read_rows(name, done)
            except Exception as e:
                problems.append(f"{name}: cannot read back done rows ({type(e).__name__}: {e})")
                continue
            if not len(done):  # nothing finished: no data to check (every row failed or is pending)
                continue
            flat = values.reshape(len(done), -1)
            if np.issubdtype(arr.dtype, np.floating):
                bad = np.flatnonzero(~np.isfinite(flat.astype(np.float32)).all(axis=1))
                if len(bad):
                    problems.append(f"{name}: {len(bad)} done row(s) with NaN/inf (rows {done[bad[:5]].tolist()})")
                empty = np.flatnonzero(~flat.any(axis=1))
                if len(empty):
                    problems.append(f"{name}: {len(empty)} done row(s) without data (rows {done[empty[:5]].tolist()})")
        if "videos/num_code_frames" in self.group and len(done):
            n = np.asarray(self.group["videos/num_code_frames"][:])[done]
            if np.any(n <= 0):
                problems.append(f"{int((n <= 0).sum())} done row(s) with no code frames")
        failed = np.flatnonzero(st == FAILED)
        if len(failed):
            errs = np.asarray(self.group["videos/error"][:])[failed]
            missing = failed[[not str(e) for e in errs]]
            if len(missing):
                problems.append(f"{len(missing)} failed row(s) without an error (rows {missing[:5].tolist()})")
        return VerifyReport(ok=not problems, problems=problems, checked_rows=len(done), failed_rows=len(failed),
                            pending_rows=int((st == PENDING).sum()))

    # ------------------------------------------------------------------ export
    def export_h5(self, path: str | Path, progress=None) -> Path:
        """Write the same tree to HDF5: groups, arrays and attributes (JSON-encoded)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        names = [f"videos/{n}" for n in ("path", "label", "split", "num_frames", "fps", "height", "width",
                                          "status", "error")]
        names += [n for n in self.data_arrays if n not in names]
        names += [n for n in self._extra_arrays() if n not in names]
        try:
            self._write_h5(tmp, names, progress)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, path)
        return path

    def _write_h5(self, tmp: Path, names: list[str], progress) -> None:
        import h5py

        with h5py.File(tmp, "w") as f:
            for k, v in self.attrs.items():
                f.attrs[k] = json.dumps(v)
            for name in names:
                arr = self.group[name]
                if arr.dtype.kind in ("T", "U", "O") or str(arr.dtype).startswith("String"):
                    values = np.array([str(x) for x in arr[:]], dtype=object)
                    f.create_dataset(name, data=values, dtype=h5py.string_dtype())
                    continue
                # HDF5 refuses chunks larger than the data (zarr allows them: a store with fewer
                # videos than its block has one partly filled chunk), so clip them to the shape.
                chunks = tuple(max(1, min(c, n)) for c, n in zip(arr.chunks, arr.shape)) \
                    if arr.ndim > 1 and arr.size else None
                ds = f.create_dataset(name, shape=arr.shape, dtype=arr.dtype, chunks=chunks)
                for k, v in arr.attrs.asdict().items():
                    ds.attrs[k] = json.dumps(v)
                dims = arr.metadata.dimension_names if hasattr(arr.metadata, "dimension_names") else None
                if dims:
                    ds.attrs["dimension_names"] = json.dumps(list(dims))
                step = max(arr.chunks[0], (LOAD_SLAB_BYTES // max(1, arr.nbytes // max(1, arr.shape[0])))
                           // arr.chunks[0] * arr.chunks[0])
                for s in range(0, arr.shape[0], step):
                    ds[s:s + step] = arr[s:s + step]
                if progress:
                    progress(name)

    def _extra_arrays(self) -> list[str]:
        """Arrays outside videos/ that are not per-video data (e.g. codes/codebook), and extra videos/*."""
        out = []

        def walk(g, prefix=""):
            for k, v in g.members():
                full = f"{prefix}{k}"
                if isinstance(v, zarr.Group):
                    walk(v, full + "/")
                else:
                    out.append(full)
        walk(self.group)
        return sorted(out)

    def add_array(self, name: str, values: np.ndarray, attrs: dict | None = None) -> None:
        """Store a small non-per-video array (a codebook, a token codebook) at creation time."""
        arr = self.group.create_array(name, shape=values.shape, dtype=values.dtype, chunks=values.shape,
                                      compressors=None, overwrite=True)
        arr[...] = values
        if attrs:
            arr.attrs.update(attrs)

    def set_attrs(self, **kv) -> None:
        """Add store attributes (e.g. FLOPs per clip) — only from rank 0, at creation."""
        self.group.attrs.update(kv)
        self.attrs.update(kv)

    def __repr__(self) -> str:
        c = self.counts()
        return (f"Store({self.url!r}, kind={self.kind!r}, videos={self.num_videos}, done={c['done']}, "
                f"failed={c['failed']}, pending={c['pending']})")


def manifest_digest(manifest) -> str:
    """sha256 over the manifest rows: a store is tied to the exact videos, labels and splits."""
    import hashlib

    h = hashlib.sha256()
    for p, y, s in zip(manifest.paths, np.asarray(manifest.labels).tolist(), manifest.splits):
        h.update(f"{p}\t{y}\t{s}\n".encode())
    h.update(json.dumps(list(manifest.classes)).encode())
    masks = getattr(manifest, "masks", None)
    if masks:  # only manifests with masks hash them, so earlier stores keep their digest
        h.update(json.dumps(list(masks)).encode())
    return h.hexdigest()
