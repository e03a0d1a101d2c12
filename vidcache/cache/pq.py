"""Product-quantised tokens: uint8 codes `[..., M]` and a codebook `clips/token_codebook`.

A token array (`clips/tokens [V, C, L, D]` or `clips/frame_tokens [V, F, h, w, D]`) can be stored as
PQ codes (DESIGN.md §2): the D dimensions are cut into M sub-vectors of D/M, each replaced by the
index of its nearest of 256 centroids (faiss `ProductQuantizer`, 8 bits, trained on the train
split's tokens). The codebook float32 `[M, 256, D/M]` sits in the store as `clips/token_codebook`
and the code array's attribute `pq_codebook` names it. `Store.read_rows` decodes such an array
back to float16 `[..., D]` for every reader (probes, dense evaluations) as it reads each slab, so
code stores and f16 stores are read alike; 2*D bytes per token become M.

    vidcache cache quantize f16.zarr -o pq.zarr --subvectors 12      # quantize_store(...)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidcache.errors import DataError, StoreError

CODEBOOK = "clips/token_codebook"
TOKEN_ARRAYS = ("clips/frame_tokens", "clips/tokens")
KSUB = 256  # 8-bit codes


def train_codebook(x: np.ndarray, m: int, seed: int = 0) -> np.ndarray:
    """float32 [m, 256, D/m] centroids of a faiss ProductQuantizer trained on x [N, D]."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    if d % m:
        raise DataError(f"the token dimension {d} is not a multiple of the number of sub-vectors {m}")
    if n < KSUB:
        raise DataError(f"{n} training tokens are fewer than the {KSUB} centroids of each sub-quantizer")
    pq = faiss.ProductQuantizer(d, m, 8)
    pq.cp.seed = int(seed)
    pq.cp.min_points_per_centroid = 1  # small training sets train, without faiss's under-sampling warning
    pq.train(x)
    return faiss.vector_to_array(pq.centroids).reshape(m, KSUB, d // m).astype(np.float32)


def encode(x: np.ndarray, codebook: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """uint8 [..., M]: each sub-vector's nearest centroid (squared L2), exact, in chunks of tokens."""
    m, k, dsub = codebook.shape
    flat = np.asarray(x, dtype=np.float32).reshape(-1, m, dsub)
    out = np.empty((len(flat), m), np.uint8)
    norms = (codebook ** 2).sum(-1)  # [m, k]
    for s in range(0, len(flat), chunk):
        part = flat[s:s + chunk]
        dist = norms[None] - 2 * np.einsum("nmd,mkd->nmk", part, codebook)
        out[s:s + chunk] = dist.argmin(-1)
    return out.reshape(*np.shape(x)[:-1], m)


def decode(codes: np.ndarray, codebook: np.ndarray, dtype=np.float16) -> np.ndarray:
    """[..., D] tokens from uint8 codes [..., M]: the centroids of every sub-vector, concatenated."""
    m, _, dsub = codebook.shape
    cb = codebook.astype(dtype, copy=False)
    flat = np.asarray(codes).reshape(-1, m).astype(np.intp)
    return cb[np.arange(m)[None, :], flat].reshape(*np.shape(codes)[:-1], m * dsub)


def codebook_digest(codebook: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(codebook, dtype=np.float32).tobytes()).hexdigest()


@dataclass
class _Rows:
    """The manifest rows of an existing store (what `Store.create` reads from a manifest)."""

    paths: list
    labels: np.ndarray
    splits: list
    classes: list
    masks: list | None

    def __len__(self) -> int:
        return len(self.paths)


def _manifest_of(store) -> _Rows:
    v = store.videos()
    masks = v.get("masks")
    return _Rows([str(p) for p in v["path"]], np.asarray(v["label"], np.int32), [str(s) for s in v["split"]],
                 list(store.classes), None if masks is None else [str(m) for m in masks])


def _training_tokens(store, name: str, split: str, limit: int, seed: int) -> np.ndarray:
    rows = store.rows(split, "done")
    if len(rows) == 0:
        raise DataError(f"{store.url} has no done videos in split {split!r} to train the codebook on")
    rng = np.random.default_rng(seed)
    per_video = max(1, limit // len(rows))
    parts = []
    for r in rows.tolist():
        t = store.read_rows(name, np.array([r]))[0]
        t = t.reshape(-1, t.shape[-1])
        t = t[np.any(t != 0, axis=1)]  # padding of frame-token stores is all zeros
        if len(t) > per_video:
            t = t[rng.choice(len(t), per_video, replace=False)]
        parts.append(t.astype(np.float32))
    return np.concatenate(parts)


def quantize_store(src_url: str | Path, out_url: str | Path, subvectors: int | None = None, *, train_split: str = "train",
                   train_tokens: int = 200_000, seed: int = 0, overwrite: bool = False, progress=None):
    """Write a copy of the clip store at `src_url` whose token array is PQ codes; returns the new Store.

    `subvectors` (M) defaults to D/8: 16x fewer bytes than float16. The codebook is trained on at most `train_tokens` tokens of `train_split` (deterministic for a
    seed). Blocks are copied one by one, data before status, so a killed run resumes where it stopped.
    """
    from vidcache.cache.store import ArraySpec, Store

    src = Store.open(src_url, kind="clips")
    names = [n for n in TOKEN_ARRAYS if n in src.data_arrays]
    if not names:
        raise DataError(f"{src.url} stores no tokens to quantize; extract with --tokens full (or a frames: "
                        f"protocol)")
    name = names[0]
    if src.group[name].attrs.get("pq_codebook"):
        raise StoreError(f"{src.url}: {name} is already PQ codes")
    D = int(src.group[name].shape[-1])
    subvectors = int(subvectors or max(1, D // 8))
    if subvectors < 1 or D % subvectors:
        raise DataError(f"--subvectors must divide the token dimension {D} (e.g. {D // 8 or 1}), got {subvectors}")
    codebook = train_codebook(_training_tokens(src, name, train_split, train_tokens, seed), subvectors, seed)
    config = {"source": src.attrs.get("config_hashed", src.config), "source_hash": src.config_hash,
              "pq": {"array": name, "subvectors": subvectors, "bits": 8, "train_split": train_split,
                     "train_tokens": train_tokens, "seed": seed, "codebook": codebook_digest(codebook)}}
    arrays = {}
    for n in src.data_arrays:
        a = src.group[n]
        shape = tuple(a.shape[1:-1]) + (subvectors,) if n == name else tuple(a.shape[1:])
        arrays[n] = ArraySpec(shape, "uint8" if n == name else str(a.dtype), videos_per_chunk=a.chunks[0],
                              fill_value=a.fill_value if n != name else 0)
    standard = {"path", "label", "split", "masks", "num_frames", "fps", "height", "width", "status", "error"}
    extra_meta = [k for k, _ in src.group["videos"].members() if k not in standard]
    for k in extra_meta:
        arrays[f"videos/{k}"] = ArraySpec((), str(src.group[f"videos/{k}"].dtype))
    skip = ("vidcache", "config", "config_hashed", "config_hash", "classes", "videos_per_block", "manifest_digest",
            "data_arrays", "vidcache_creating")
    attrs = {k: v for k, v in src.attrs.items() if k not in skip}
    attrs["pq"] = config["pq"]
    out = Store.open_or_create(out_url, "clips", _manifest_of(src), config, arrays, overwrite=overwrite,
                               videos_per_block=src.videos_per_block, attrs=attrs,
                               static_arrays={CODEBOOK: (codebook, {"subvectors": subvectors, "bits": 8})})
    out.group[name].attrs.update({"pq_codebook": CODEBOOK})
    meta_names = ["num_frames", "fps", "height", "width"] + extra_meta
    pending = out.pending_blocks()
    for i, b in enumerate(pending):
        s, e = out.block_range(b)
        rows = np.arange(s, e)
        data = {n: src.read_rows(n, rows) for n in src.data_arrays}
        data[name] = encode(data[name], codebook)
        meta = {k: np.asarray(src.group[f"videos/{k}"][s:e]) for k in meta_names}
        status = np.asarray(src.status()[s:e])
        errors = [str(x) for x in np.asarray(src.group["videos/error"][s:e])]
        if np.any(status == 0):
            raise StoreError(f"{src.url} has pending videos (block {b}); finish its extraction before quantizing")
        out.write_block(b, data, status, errors, meta=meta)
        if progress is not None:
            progress(i + 1, len(pending))
    return out
