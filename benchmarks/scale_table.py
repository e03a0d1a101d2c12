"""The SCALE table (docs/scale.md) on two corpora, official and thesis forms side by side.

Corpora: the synthetic corpus (`vidcache data synth`, the demo's 8 classes, motion and appearance) and
camera pans over real photographs and real footage (`benchmarks/real_footage.py`, task "direction").
Per corpus: a training store `random:16:0` (SCALE's sets) and an evaluation store `uniform:8` with the
`tiny` backbone; SCALE trained with the official defaults (epochs and batch cut to fit 2 CPU cores),
once per loss form (heads 1024 / 512 wide instead of 4096 / 2048 by default, for the CPU);
`vidcache scale eval` with the eval store as both --train-store and --eval-store, on a small grid
(lr 1e-3 / 1e-2 for the frozen-feature heads, 3e-4 / 1e-3 for the fine-tuned ones, wd 1e-4, 10 epochs).
Writes benchmarks/results/scale_table.json (the result format of benchmarks/common.py: one row per
corpus / form / method) and prints one markdown table.

Usage: python -m benchmarks.scale_table [--work DIR] [--videos N] [--epochs E] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import vidcache  # noqa: E402,F401  (package OpenMP defaults before torch)
from benchmarks.common import Report, result_path  # noqa: E402
from benchmarks.real_footage import build_corpus  # noqa: E402


def corpus(work: Path, name: str, videos: int, seed: int):
    from vidcache.data.manifest import read_manifest
    from vidcache.data.synth import SynthConfig, synthesize

    root = work / name
    if name == "synthetic":
        if (root / "manifest.csv").is_file():
            return read_manifest(root / "manifest.csv")
        return synthesize(root, SynthConfig(videos=videos, seed=seed), workers=1)
    return build_corpus(root, "direction", videos, seed=seed)


def stores(work: Path, name: str, manifest, backbone: str) -> tuple[str, str]:
    from vidcache.extract.clips import ClipExtractConfig, extract_clips

    out = []
    for protocol, tag in (("random:16:0", "train16"), ("uniform:8", "eval8")):
        url = str(work / f"{name}_{backbone}_{tag}.zarr")
        extract_clips(manifest, url, ClipExtractConfig(backbone=backbone, protocol=protocol, workers=1))
        out.append(url)
    return out[0], out[1]


def run_form(rep: Report, args, work: Path, name: str, urls: tuple[str, str], form: str) -> None:
    from vidcache.scale.config import ScaleConfig
    from vidcache.scale.evaluate import ScaleEvalConfig, evaluate_run
    from vidcache.scale.train import train_from_store

    train_store, eval_store = urls
    t1 = time.perf_counter()
    run = work / f"{name}_{args.backbone}_{form}"
    cfg = ScaleConfig(loss_form=form, epochs=args.epochs, batch_size=args.batch_size, seed=0,
                      pred_head_hidden=args.pred_head_hidden, target_head_hidden=args.target_head_hidden,
                      checkpoint_every=max(1, args.epochs // 3), device="cpu")
    train_from_store(train_store, run, cfg)
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"seconds"' in x]
    last = metrics[-1]
    ecfg = ScaleEvalConfig(epochs=args.eval_epochs, ft_epochs=args.eval_epochs, lrs=[1e-3, 1e-2], wds=[1e-4],
                           ft_lrs=[3e-4, 1e-3], ft_wds=[1e-4], mlp_hidden=256, seed=0, device="cpu")
    summary = evaluate_run(run, eval_store, eval_store, run / "eval", ecfg)
    table = {r["method"]: r["test_top1"] for r in summary["table"]}
    key = f"{name}/{form}"
    rep.config.setdefault("num_videos", {})[key] = summary["num_videos"]
    for method, top1 in table.items():
        rep.figure(f"{key}/{method}", top1, "{:.1f}", unit="%")
    rep.figure(f"{key}/final_loss", last["loss"])
    rep.figure(f"{key}/final_mcm", last["mcm"])
    rep.figure(f"{key}/final_set", last["set"])
    rep.figure(f"{key}/set_acc", last["set_acc"])
    rep.figure(f"{key}/mcm_acc", last["mcm_acc"])
    rep.figure(f"{key}/mcm_share",
               (0.5 * last["mcm"] / last["loss"]) if form == "official" else last["mcm"] / last["loss"], "{:.2f}")
    rep.figure(f"{key}/seconds", time.perf_counter() - t1, "{:.0f}", unit="s")
    rep.finish(result_path("scale_table", args.quick))  # after every form: a stopped run keeps its tables


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("scale-table-work"))
    ap.add_argument("--videos", type=int, default=320)
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--backbone", default="tiny")
    ap.add_argument("--pred-head-hidden", type=int, default=1024, help="official 4096; narrower to fit a CPU")
    ap.add_argument("--target-head-hidden", type=int, default=512, help="official 2048; narrower to fit a CPU")
    ap.add_argument("--corpora", nargs="+", default=["synthetic", "real_pans"])
    ap.add_argument("--forms", nargs="+", default=["official", "thesis"])
    ap.add_argument("--eval-epochs", type=int, default=10, help="epochs of every trained row of the table")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs")
    args = ap.parse_args()
    if args.quick:
        args.videos, args.epochs = 48, 2
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    rep = Report("scale_table", {**vars(args), "work": work.name}, quick=args.quick)
    prepared = {}
    for name in args.corpora:
        t0 = time.perf_counter()
        manifest = corpus(work, name, args.videos, 0)
        prepared[name] = stores(work, name, manifest, args.backbone)
        print(f"{name}: {len(manifest.paths)} videos, classes {manifest.classes} ({time.perf_counter() - t0:.0f} s)",
              flush=True)
        if name == args.corpora[0]:  # the first corpus' official table comes before the second's stores
            run_form(rep, args, work, name, prepared[name], args.forms[0])
    for form in args.forms:
        for name in args.corpora:
            if (name, form) != (args.corpora[0], args.forms[0]):
                run_form(rep, args, work, name, prepared[name], form)
    methods = ["Linear", "MLP", "kNN", "Transformer", "SCALE_linear", "SCALE_kNN", "SCALE_ft"]
    print("| corpus / form | " + " | ".join(methods) + " |")
    print("|---|" + "---|" * len(methods))
    fig = rep.figures
    for key in rep.config["num_videos"]:
        print(f"| {key} | " + " | ".join(f"{fig.get(f'{key}/{m}', float('nan')):.1f}" for m in methods) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
