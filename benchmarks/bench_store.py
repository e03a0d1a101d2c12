"""Store write throughput and load speed vs `np.load` of the same array (DESIGN.md §2, §6).

Writes a clip store of V videos x 5 clips x 768 float16 block by block (as the extractor does), then
loads the train split into memory, side by side with `np.load` of the same array saved as .npy (and
indexing the same rows), in one run. Target: load_ratio = store / npy speed >= 0.5.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import Report, best_of, parser
from vidcache.cache import DONE, ArraySpec, Store
from vidcache.data.manifest import Manifest


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=None)
    args = p.parse_args(argv)
    V = args.videos or (2_000 if args.quick else 20_000)
    C, D = 5, 768
    rep = Report("store", {"videos": V, "clips": C, "dim": D, "dtype": "float16", "quick": args.quick})
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((V, C, D), dtype=np.float32).astype(np.float16)
    splits = np.where(rng.random(V) < 0.8, "train", "test")
    manifest = Manifest([f"v{i}.mp4" for i in range(V)], rng.integers(0, 100, V), splits.tolist())
    tmp = Path(tempfile.mkdtemp(prefix="bench_store_"))
    try:
        store = Store.create(tmp / "s.zarr", "clips", manifest, {"bench": True},
                             {"clips/emb": ArraySpec((C, D), "float16")})
        t = time.perf_counter()
        for b in range(store.num_blocks):
            s, e = store.block_range(b)
            store.write_block(b, {"clips/emb": emb[s:e]}, np.full(e - s, DONE))
        write_s = time.perf_counter() - t
        rep.figure("videos_per_block", store.videos_per_block)
        rep.figure("write_rows_per_s", V / write_s, "{:.0f}")
        rep.figure("write_MB_per_s", emb.nbytes / write_s / 1e6, "{:.0f}")

        np.save(tmp / "emb.npy", emb)
        np.save(tmp / "split.npy", splits)
        rows = np.flatnonzero(splits == "train")

        def npy_load():
            a = np.load(tmp / "emb.npy")
            sp = np.load(tmp / "split.npy")
            return a[sp == "train"]

        def store_load():
            return Store.open(tmp / "s.zarr").load(("emb",), split="train")["emb"]

        np.testing.assert_array_equal(store_load(), emb[rows])
        t_npy = best_of(npy_load)
        t_store = best_of(store_load)
        mb = emb[rows].nbytes / 1e6
        rep.figure("npy_load_MB_per_s", mb / t_npy, "{:.0f}")
        rep.figure("store_load_MB_per_s", mb / t_store, "{:.0f}")
        ratio = t_npy / t_store
        rep.figure("load_ratio", ratio, "{:.3f}", unit="x")
        rep.target("load_ratio", ratio, ">=", 0.5)
        rep.finish(args.out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
