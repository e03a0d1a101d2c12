"""`vidcache demo`: the whole workflow on the built-in synthetic corpus with the `tiny` backbone.

    corpus (mp4s) -> clip store (tiny, 4 clips/video, pooled tokens) -> linear / kNN / attentive probes
                  -> frame-token store of the val videos -> label propagation J&F vs copying the first mask
                  -> codebook -> code store -> PSNR, compression, preview PNG
                  -> SCALE store (random clips) -> SCALE training -> SCALE rows next to Linear

Each step calls the library function behind the matching CLI command, and each step resumes from
what an earlier run left in the output folder. Everything runs on CPU in a few minutes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
from rich.console import Console
from rich.table import Table


def group_accuracy(confusion, classes: list[str], group: Callable[[str], str]) -> dict[str, float]:
    """Top-1 per class group from a confusion matrix (rows = true class)."""
    cm = np.asarray(confusion, dtype=np.float64)
    out = {}
    for g in sorted({group(c) for c in classes}):
        idx = [i for i, c in enumerate(classes) if group(c) == g and i < len(cm)]
        total = cm[idx].sum()
        out[g] = float(cm[idx, idx].sum() / total * 100) if total else float("nan")
    return out


def run_demo(out_dir: str | Path, *, videos: int = 240, workers: int = 2, seed: int = 0,
             console: Console | None = None, progress: Callable | None = None, scale: bool = True,
             codec: bool = True, full: bool = False, pretrain_steps: int = 300, dense: bool = True) -> dict:
    """Run the demo into `out_dir`; returns a dict with every step's results (also in summary.json)."""
    from vidcache.cache import Store
    from vidcache.data.manifest import read_manifest
    from vidcache.data.synth import SynthConfig, class_kind, synthesize
    from vidcache.extract.clips import ClipExtractConfig, extract_clips
    from vidcache.probe.run import make_config, run_probe

    console = console or Console()
    out = Path(out_dir)
    bar = progress or _null_bar
    codec = codec or full  # pretraining reads the code store
    steps = 3 + int(dense) + int(codec) + int(scale) + int(full)
    results: dict = {"videos": videos, "seed": seed}
    t_start = time.perf_counter()

    # 1. corpus ---------------------------------------------------------------------------------
    manifest_path = out / "corpus" / "manifest.csv"
    t = time.perf_counter()
    if manifest_path.is_file():
        manifest = read_manifest(manifest_path)
    else:
        with bar("synthesising corpus", videos) as update:
            manifest = synthesize(out / "corpus", SynthConfig(videos=videos, classes=8, seed=seed),
                                  progress=lambda d, n: update(d, n), overwrite=True, workers=workers)
    console.print(f"[1/{steps}] corpus: {len(manifest)} H.264 videos in {len(manifest.classes)} classes "
                  f"({time.perf_counter() - t:.1f} s): {', '.join(manifest.classes)}")

    # 2. clip store -----------------------------------------------------------------------------
    store_path = out / "clips_tiny.zarr"
    t = time.perf_counter()
    cfg = ClipExtractConfig(backbone="tiny", protocol="uniform:4", tokens="pool:2,4,4", workers=workers)
    with bar("extracting clips (tiny)", len(manifest)) as update:
        summary = extract_clips(manifest, str(store_path), cfg, progress=lambda d, n, c: update(d, n))
    info = Store.open(store_path).info()
    results["clip_store"] = {k: info[k] for k in ("url", "counts", "arrays", "bytes_on_disk", "config_hash")}
    console.print(f"[2/{steps}] clip store {store_path}: {info['counts']['done']} videos x 4 clips, "
                  f"emb {info['arrays']['clips/emb']['shape']}, tokens {info['arrays']['clips/tokens']['shape']}, "
                  f"{info['bytes_on_disk'] / 1e6:.1f} MB ({summary.videos} extracted now, "
                  f"{time.perf_counter() - t:.1f} s)")

    # 3. probes -----------------------------------------------------------------------------------
    t = time.perf_counter()
    probes = {"linear": make_config("linear", seed=seed), "knn": make_config("knn", ks=[10, 20], seed=seed),
              # tiny's tokens carry a large shared offset: standardising them (jepa does not) is
              # what lets the attentive probe learn from 176 videos.
              "attentive": make_config("attentive", seed=seed, num_heads=4, epochs=40, standardize=True,
                                       lrs=[3e-4, 1e-3, 3e-3], warmup_epochs=1.0)}
    rows = []
    for name, pcfg in probes.items():
        res = run_probe(name, str(store_path), out / "probes" / name, pcfg)
        groups = group_accuracy(res["test"]["confusion"], res["classes"], class_kind)
        rows.append({"probe": name, "val": res["val"]["top1"], "test": res["test"]["top1"], **groups,
                     "selected": {k: v for k, v in res["selected"].items() if k != "index"}})
    results["probes"] = rows
    console.print(f"[3/{steps}] probes on the clip store ({time.perf_counter() - t:.1f} s)")
    table = Table(title=f"probes on tiny features (chance {100 / len(manifest.classes):.1f}%)")
    for col in ("probe", "val top1", "test top1", "test motion", "test appearance", "selected"):
        table.add_column(col, justify="left" if col in ("probe", "selected") else "right")
    for r in rows:
        table.add_row(r["probe"], f"{r['val']:.1f}", f"{r['test']:.1f}", f"{r.get('motion', float('nan')):.1f}",
                      f"{r.get('appearance', float('nan')):.1f}",
                      ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["selected"].items()))
    console.print(table)

    step = 3
    # 4. dense: label propagation on the synthetic masks ----------------------------------------
    if dense and manifest.masks:
        step += 1
        results["dense"] = _dense_step(manifest, out, workers, bar)
        d = results["dense"]
        table = Table(title="label propagation on the val videos' masks (DAVIS J&F)")
        for col in ("method", "J", "F", "J&F", "J&F travelling objects", "J&F other objects"):
            table.add_column(col, justify="left" if col == "method" else "right")
        for label, key in (("propagation (tiny_frame tokens)", "propagation"), ("copy the first mask", "copy_first")):
            r = d[key]
            table.add_row(label, f"{r['J_mean']:.3f}", f"{r['F_mean']:.3f}", f"{r['JF_mean']:.3f}",
                          f"{r['moving']:.3f}", f"{r['in_place']:.3f}")
        console.print(f"[{step}/{steps}] dense: {d['sequences']} val videos, {d['frames_per_s']:.0f} frames/s "
                      f"propagated from the cache ({d['seconds']:.1f} s)")
        console.print(table)

    # 5. codec ------------------------------------------------------------------------------------
    if codec:
        step += 1
        results["codec"] = _codec_step(manifest, out, workers, seed, bar)
        c = results["codec"]
        console.print(f"[{step}/{steps}] codec: k={c['k']} patch {c['patch']}: test PSNR {c['psnr_mean']:.2f} dB, "
                      f"compression {c['compression_codes']:.0f}x (raw / codes), {c['compression_disk']:.0f}x "
                      f"(raw / store on disk); preview {c['preview']} ({c['seconds']:.1f} s)")

    # 5. SCALE ------------------------------------------------------------------------------------
    if scale:
        step += 1
        results["scale"] = _scale_step(manifest, out, store_path, workers, seed, bar, console)
        console.print(f"[{step}/{steps}] SCALE on tiny clip sets ({results['scale']['seconds']:.1f} s)")

    # 6. pretraining from codes ------------------------------------------------------------------
    if full:
        step += 1
        results["pretrain"] = _pretrain_step(manifest, out, results["codec"]["store"], workers, seed, bar, console,
                                             pretrain_steps)
        console.print(f"[{step}/{steps}] V-JEPA pretraining of vit_micro from codes "
                      f"({results['pretrain']['seconds']:.1f} s)")

    results["seconds"] = time.perf_counter() - t_start
    (out / "summary.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    console.print(f"demo finished in {results['seconds']:.0f} s; everything is in {out} (summary.json)")
    return results


# Synthetic motion classes whose object travels across the frame; the others turn, grow or shrink in
# place, or drift slowly (appearance classes).
_TRAVELLING = ("left", "right", "up", "down", "fast", "slow")


def _dense_step(manifest, out: Path, workers: int, bar) -> dict:
    """Frame tokens of the val videos (tiny_frame, 4-pixel patches), then label propagation."""
    from vidcache.data.manifest import Manifest
    from vidcache.dense.propagate import PropagateConfig, run_propagate
    from vidcache.extract.clips import ClipExtractConfig, extract_clips

    t = time.perf_counter()
    rows = [i for i, s in enumerate(manifest.splits) if s == "val"]
    sub = Manifest([manifest.paths[i] for i in rows], manifest.labels[rows], [manifest.splits[i] for i in rows],
                   manifest.classes, masks=[manifest.masks[i] for i in rows])
    store = out / "frames_tiny_frame_p4.zarr"
    cfg = ClipExtractConfig(backbone="tiny_frame", backbone_options={"patch_size": 4}, protocol="frames:all",
                            tokens="full", workers=workers)
    with bar("extracting frame tokens (val)", len(sub)) as update:
        extract_clips(sub, str(store), cfg, progress=lambda d, n, c: update(d, n))
    res = run_propagate(store, out / "propagate", PropagateConfig(split="val"))
    name_to_class = {Path(p).stem: manifest.classes[y] for p, y in zip(sub.paths, sub.labels.tolist())}

    def group_mean(key: str, travelling: bool) -> float:
        vals = [s[key] for name, s in res["sequences"].items()
                if (name_to_class.get(name, "").split("_", 1)[-1] in _TRAVELLING) == travelling]
        return float(np.mean(vals)) if vals else float("nan")

    prop = {k: res[k] for k in ("J_mean", "F_mean", "JF_mean")}
    prop.update(moving=group_mean("JF_mean", True), in_place=group_mean("JF_mean", False))
    copy = dict(res["baseline"]["copy_first"])
    copy.update(moving=group_mean("copy_first_JF", True), in_place=group_mean("copy_first_JF", False))
    return {"propagation": prop, "copy_first": copy, "sequences": res["num_sequences"],
            "frames_per_s": res["timings"]["frames_per_s"], "results": str(out / "propagate" / "results.json"),
            "seconds": time.perf_counter() - t}


def _codec_step(manifest, out: Path, workers: int, seed: int, bar) -> dict:
    from vidcache.codec import CodecConfig, evaluate_store, load_codebook, train_codebook
    from vidcache.extract.codes import CodeExtractConfig, extract_codes

    t = time.perf_counter()
    cb_path = out / "codebook_k256_p8.npz"
    if not cb_path.is_file():
        cb = train_codebook(manifest, CodecConfig(k=256, patch=8, size=64, niter=15, seed=seed, frames_per_video=4),
                            progress=False)
        cb.save(cb_path)
    cb = load_codebook(cb_path)
    codes = out / "codes_k256_p8.zarr"
    with bar("encoding patch codes", len(manifest)) as update:
        extract_codes(manifest, str(codes), CodeExtractConfig(codebook=str(cb_path), max_frames=32, workers=workers),
                      progress=lambda d, n, c: update(d, n))
    res = evaluate_store(codes, split="test", preview=out / "codec_preview.png")
    return {"k": cb.k, "patch": cb.patch, "psnr_mean": res["psnr_mean"], "compression_codes": res["compression_codes"],
            "compression_disk": res["compression_disk"], "preview": res.get("preview"), "store": str(codes),
            "seconds": time.perf_counter() - t}


def _scale_step(manifest, out: Path, eval_store: Path, workers: int, seed: int, bar, console) -> dict:
    from vidcache.extract.clips import ClipExtractConfig, extract_clips
    from vidcache.scale.config import ScaleConfig
    from vidcache.scale.evaluate import ScaleEvalConfig, evaluate_run, results_table
    from vidcache.scale.train import train_from_store

    t = time.perf_counter()
    train_store = out / "clips_tiny_random8.zarr"
    cfg = ClipExtractConfig(backbone="tiny", protocol=f"random:8:{seed}", workers=workers)
    with bar("extracting SCALE training clips", len(manifest)) as update:
        extract_clips(manifest, str(train_store), cfg, progress=lambda d, n, c: update(d, n))
    run = out / "scale_run"
    scfg = ScaleConfig(clips_per_set=4, epochs=60, batch_size=64, hidden_dim=128, num_heads=4,
                       pred_head_hidden=1024, target_head_hidden=512, seed=seed, checkpoint_every=20)
    with bar("SCALE training", scfg.epochs) as update:
        train_from_store(train_store, run, scfg, progress=lambda epoch, m: update(epoch, scfg.epochs))
    summary = evaluate_run(run, train_store, eval_store, out / "scale_eval",
                           ScaleEvalConfig(epochs=15, ft_epochs=15, seed=seed, mlp_hidden=256))
    console.print(results_table(summary))
    return {"table": summary, "seconds": time.perf_counter() - t}


def _pretrain_step(manifest, out: Path, codes: str, workers: int, seed: int, bar, console, steps: int) -> dict:
    """Pretrain the smallest encoder on the code store, then probe it next to its random init."""
    from vidcache.extract.clips import ClipExtractConfig, extract_clips
    from vidcache.pretrain.train import PretrainConfig, checkpoint_path, pretrain
    from vidcache.probe.run import make_config, run_probe

    t = time.perf_counter()
    run = out / "pretrain_vit_micro"
    cfg = PretrainConfig(codes=codes, out=str(run), model="vit_micro", num_frames=8, frame_stride=2, patch_size=8,
                         tubelet_size=2, pred_depth=2, pred_dim=96, steps=steps, batch_size=16, lr=1e-3,
                         start_lr=2e-4, warmup=0.1, checkpoint_every=steps, seed=seed, workers=min(workers, 1))
    with bar("V-JEPA pretraining (vit_micro)", steps) as update:
        summary = pretrain(cfg, progress=lambda s, n, m: update(s, n))
    table = Table(title=f"vit_micro: random init vs {steps} V-JEPA steps on codes (chance "
                        f"{100 / len(manifest.classes):.1f}%)")
    for col in ("encoder", "linear test", "linear motion", "kNN test", "kNN motion"):
        table.add_column(col, justify="left" if col == "encoder" else "right")
    rows = {}
    from vidcache.data.synth import class_kind

    for label, step in (("random init", 0), (f"step {steps}", steps)):
        ckpt = checkpoint_path(run, step)
        store = out / f"clips_vit_micro_step{step}.zarr"
        extract_clips(manifest, str(store), ClipExtractConfig(backbone=f"vidcache:{ckpt}", protocol="uniform:4",
                                                              workers=workers))
        row = {}
        for probe, pcfg in (("linear", make_config("linear", seed=seed)),
                            ("knn", make_config("knn", ks=[10, 20], seed=seed))):
            res = run_probe(probe, str(store), out / "probes" / f"vit_micro_step{step}" / probe, pcfg)
            row[probe] = {"test": res["test"]["top1"],
                          **group_accuracy(res["test"]["confusion"], res["classes"], class_kind)}
        rows[label] = row
        table.add_row(label, f"{row['linear']['test']:.1f}", f"{row['linear'].get('motion', float('nan')):.1f}",
                      f"{row['knn']['test']:.1f}", f"{row['knn'].get('motion', float('nan')):.1f}")
    console.print(table)
    return {"run": str(run), "final_loss": summary.get("last_loss"), "probes": rows,
            "seconds": time.perf_counter() - t}


class _NullBar:
    def __enter__(self):
        return lambda *a, **k: None

    def __exit__(self, *exc):
        return False


def _null_bar(description: str, total: int):
    return _NullBar()
