"""Pretraining benchmark: codes loader vs mp4 loader, training steps/s, and what pretraining learns.

Figures (one run, side by side, on the synthetic corpus):
- loader frames/s: clips cut from a code store and decoded on the device vs the same clips decoded
  from the mp4s (decord, same frames, crops and flips, same output resolution); target ratio >= 10;
- training steps/s of a ViT-S V-JEPA step fed by each loader (target >= 2 on a GPU; on a CPU the
  model's compute dominates both and the ratio is near 1);
- learning: vit_micro pretrained for a bounded number of steps vs the same model at its random
  initialisation (the run's step-0 checkpoint), both extracted as `vidcache:` backbones (with their
  tokens) and probed with kNN, linear and the attentive probe (the V-JEPA paper's protocol) on the
  motion classes only, which a single frame cannot solve, and on an appearance task of real footage
  (which photograph or camera clip a pan shows, `benchmarks/real_footage.py`).

    python -m benchmarks.bench_pretrain [--quick] [--device cuda]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Before torch, so `python benchmarks/bench_pretrain.py` runs with the package's OpenMP defaults
# (passive waiting) as `python -m benchmarks...` and `vidcache pretrain` do. With torch first, the
# main process's OpenMP threads spin and take the cores the loader workers need: on 2 cores shared
# with another busy process, the codes loader measured 3x and the mp4 loader up to 1.3x slower.
import vidcache  # noqa: F401  (before torch: OpenMP defaults)
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import Report, parser  # noqa: E402


def make_corpus(root: Path, videos: int, size: int, frames: int, k: int, patch: int, seed: int = 0):
    """Synthetic corpus -> codebook fitted on its frames -> code store. Returns (manifest, codes url)."""
    from vidcache.codec import CodecConfig, train_codebook
    from vidcache.data.synth import SynthConfig, synthesize
    from vidcache.extract.codes import CodeExtractConfig, extract_codes

    manifest = synthesize(root / "corpus", SynthConfig(videos=videos, classes=8, size=size, frames=frames, seed=seed),
                          overwrite=True)
    cb = train_codebook(manifest, CodecConfig(k=k, patch=patch, size=size, niter=10, frames_per_video=4,
                                              device="cpu"), progress=False)
    cb.save(root / "codebook.npz")
    url = str(root / "codes.zarr")
    extract_codes(manifest, url, CodeExtractConfig(codebook=str(root / "codebook.npz"), max_frames=frames,
                                                   workers=2, device="cpu"))
    return manifest, url


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loader_fps(url: str, kind: str, *, num_frames: int, stride: int, batch: int, batches: int, min_seconds: float,
               workers: int, device: torch.device) -> float:
    """Frames/s of normalised clips on `device`, after one warm-up batch (workers started).

    Timed over at least `batches` batches and `min_seconds`, so both loaders are measured over
    a similar stretch of time: a fixed batch count gave the faster loader a window of a few
    scheduler time slices, which the workers' start-up burst (filling their prefetch queues)
    and any other process on the cores could fill.
    """
    from vidcache.models.backbone import IMAGENET_MEAN, IMAGENET_STD
    from vidcache.pretrain.loader import (ClipDecoder, ClipSampling, CodeClipDataset, CodeSource, Mp4ClipDataset,
                                          PixelDecoder, StreamSampler, make_loader)

    src = CodeSource.from_store(url, split=None)
    sampling = ClipSampling(num_frames, stride, src.grid, seed=0)
    ds = CodeClipDataset(src, sampling) if kind == "codes" else Mp4ClipDataset(src, sampling)
    # Both decoders write into one reused output, as the trainer's do.
    dec = (ClipDecoder(src.centroids, src.patch, IMAGENET_MEAN, IMAGENET_STD, reuse_output=True) if kind == "codes"
           else PixelDecoder(IMAGENET_MEAN, IMAGENET_STD, reuse_output=True)).to(device)
    it = iter(make_loader(ds, StreamSampler(len(src), batch, seed=0), workers, pin_memory=device.type == "cuda"))
    b = next(it)
    dec(b.get("codes", b.get("pixels")), b["flip"])
    _sync(device)
    done = 0
    t = time.perf_counter()
    while done < batches or time.perf_counter() - t < min_seconds:
        b = next(it)
        video = dec(b.get("codes", b.get("pixels")), b["flip"])
        done += 1
    _sync(device)
    seconds = time.perf_counter() - t
    del it
    assert video.shape[2] == num_frames
    return done * batch * num_frames / seconds


def train_steps_per_s(url: str, kind: str, out: Path, *, model: str, num_frames: int, batch: int, steps: int,
                      workers: int, device: str, pred_depth: int, pred_dim: int) -> float:
    from vidcache.device import resolve_device
    from vidcache.pretrain.train import PretrainConfig, Trainer

    cfg = PretrainConfig(codes=url, out=str(out), model=model, split=None, num_frames=num_frames, frame_stride=2,
                         patch_size=16, tubelet_size=2, pred_depth=pred_depth, pred_dim=pred_dim, steps=1000,
                         batch_size=batch, workers=workers, device=device, loader=kind)
    dev = resolve_device(device)
    trainer = Trainer(cfg, dev)
    it = iter(trainer.loader())
    trainer.train_step(next(it))  # warm-up: workers, allocator, autocast caches
    _sync(dev)
    t = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(next(it))
    _sync(dev)
    seconds = time.perf_counter() - t
    del it
    return steps / seconds


PROBES = ("knn", "linear", "attentive")


def store_probes(store_url: str, kind: str | None = "motion", epochs: int = 20) -> dict[str, float]:
    """kNN, linear (on mean-pooled clip embeddings) and attentive (on the stored tokens: the V-JEPA
    paper's protocol, jepa's layout without the output projection, 20 epochs) test top-1 on the
    classes of `kind` ("motion": the synthetic motion classes, which a single frame cannot solve;
    None: every class)."""
    from vidcache.cache import Store
    from vidcache.data.synth import class_kind
    from vidcache.probe import ProbeData, load_split, make_config, run_probe

    store = Store.open(store_url, kind="clips")
    keep_classes = [i for i, c in enumerate(store.classes) if kind is None or class_kind(c) == kind]
    remap = {c: j for j, c in enumerate(keep_classes)}
    out = {}
    for name in PROBES:
        array = "tokens" if name == "attentive" else "emb"
        data = {}
        for split in ("train", "val", "test"):
            d = load_split(store, split, (array,))
            keep = np.isin(d.y, keep_classes)
            data[split] = ProbeData(d.x[keep].astype(np.float32), np.array([remap[int(y)] for y in d.y[keep]]),
                                    classes=[store.classes[c] for c in keep_classes], split=split)
        over = {"epochs": epochs} if name != "knn" else {}
        if name == "attentive":
            dim = data["train"].x.shape[-1]
            over["num_heads"] = next(h for h in (12, 8, 6, 4, 3, 2, 1) if dim % h == 0)
        res = run_probe(name, data, None, make_config(name, **over))
        out[name] = float(res["test"]["top1"])
    return out


def learning(manifest, url: str, root: Path, *, steps: int, batch: int, device: str,
             appearance=None, model: str = "vit_micro") -> dict[str, float]:
    """Pretrain `model` on the code store, then probe its checkpoint and its random init (step 0) with
    kNN, linear and attentive probes: on the synthetic motion classes, and on `appearance` (a manifest of
    real footage, every class) when given."""
    from vidcache.extract.clips import ClipExtractConfig, extract_clips
    from vidcache.pretrain import PretrainConfig, pretrain

    run = root / "run"
    cfg = PretrainConfig(codes=url, out=str(run), model=model, num_frames=8, frame_stride=2, patch_size=8,
                         tubelet_size=2, crop_scale=(0.5, 1.0), pred_depth=4, pred_dim=96, steps=steps,
                         batch_size=batch, lr=1e-3, start_lr=2e-4, warmup=0.1, workers=2, device=device,
                         checkpoint_every=steps, log_every=max(1, steps // 20))
    t = time.perf_counter()
    summary = pretrain(cfg)
    result = {"pretrain_seconds": time.perf_counter() - t, "final_loss": summary["last_loss"]}
    tasks = [("motion", manifest, "motion")] + ([("appearance", appearance, None)] if appearance is not None else [])
    for tag, step in (("random_init", 0), ("pretrained", steps)):
        for task, man, kind in tasks:
            store = root / f"clips_{task}_{tag}.zarr"
            ecfg = ClipExtractConfig(backbone=f"vidcache:{run / f'ckpt_{step:06d}.pt'}", protocol="uniform:2",
                                     tokens="full", workers=0, device=device, batch_size=32)
            extract_clips(man, str(store), ecfg)
            for name, acc in store_probes(str(store), kind).items():
                result[f"{task}_{name}_{tag}" if task != "motion" else f"{name}_{tag}"] = acc
    return result


def main(argv=None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers for both loaders")
    p.add_argument("--learning-only", action="store_true",
                   help="only the learning figures (written to bench_pretrain_learning.json unless --out)")
    p.add_argument("--learning-steps", type=int, default=None, help="pretraining steps of the learning run")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    quick = args.quick
    sizes = dict(videos=48 if quick else 160, size=64 if quick else 128, frames=32, k=256 if quick else 1024,
                 patch=8)
    learn = dict(videos=96 if quick else 240, size=32, frames=32, k=256, patch=4)
    cfg = {"quick": quick, "loader_corpus": sizes, "learning_corpus": learn, "workers": args.workers,
           "loader_batch": 8, "loader_batches": 6 if quick else 30, "loader_min_seconds": 1.0 if quick else 3.0,
           "clip": "16 frames, stride 2",
           "train_model": "vit_small", "train_steps": 2 if quick else 10,
           "learning_steps": args.learning_steps or (40 if quick else 400), "learning_batch": 16}
    report = Report("pretrain", cfg, args.device)
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if not args.learning_only:
            t = time.perf_counter()
            _, url = make_corpus(root / "loader", **sizes)
            report.figure("setup_seconds", time.perf_counter() - t, "{:.1f}")

            fps = {}
            for kind in ("codes", "mp4"):
                fps[kind] = loader_fps(url, kind, num_frames=16, stride=2, batch=cfg["loader_batch"],
                                       batches=cfg["loader_batches"], min_seconds=cfg["loader_min_seconds"],
                                       workers=args.workers, device=device)
                report.figure(f"loader_{kind}_frames_per_s", fps[kind], "{:.0f}")
            ratio = fps["codes"] / fps["mp4"]
            report.figure("loader_ratio", ratio, "{:.2f}", unit="x")
            report.target("loader_codes_vs_mp4", ratio, ">=", 10.0, unit="x")

            sps = {}
            for kind in ("codes", "mp4"):
                sps[kind] = train_steps_per_s(url, kind, root / f"train_{kind}", model="vit_small",
                                              num_frames=16, batch=4 if quick else 8, steps=cfg["train_steps"],
                                              workers=args.workers, device=str(device), pred_depth=4 if quick else 12,
                                              pred_dim=192 if quick else 384)
                report.figure(f"train_vit_small_{kind}_steps_per_s", sps[kind], "{:.3f}")
            report.figure("train_ratio", sps["codes"] / sps["mp4"], "{:.2f}", unit="x")
            if device.type == "cuda":
                report.target("train_codes_vs_mp4_gpu", sps["codes"] / sps["mp4"], ">=", 2.0, unit="x")

        manifest, url = make_corpus(root / "learn", **learn)
        from benchmarks.real_footage import build_corpus

        appearance = build_corpus(root / "real_source", "source", 60 if quick else 200, size=32, frames=32)
        res = learning(manifest, url, root / "learn", steps=cfg["learning_steps"], batch=cfg["learning_batch"],
                       device=str(device), appearance=appearance)
        # top-1 in percent: the pretrained encoder must beat its random init by at least one point.
        for name, value in res.items():
            report.figure(f"learning_{name}", value, "{:.3f}")
        report.target("knn_gain_over_random_init", res["knn_pretrained"] - res["knn_random_init"], ">=", 1.0, unit="pts")
        report.target("linear_gain_over_random_init", res["linear_pretrained"] - res["linear_random_init"], ">=", 1.0, unit="pts")
        report.target("attentive_gain_over_random_init",
                      res["attentive_pretrained"] - res["attentive_random_init"], ">=", 1.0, unit="pts")
    from benchmarks.common import result_path

    return report.finish(args.out or (result_path("bench_pretrain_learning", quick) if args.learning_only else None))


if __name__ == "__main__":
    main()
