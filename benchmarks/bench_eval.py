"""Batch re-evaluation: shared decode vs separate extractions, and a cached rerun vs the first run.

On the synthetic demo corpus with 6 checkpoints (seeds of `tiny` saved as vidcache checkpoints)
and 2 probes (kNN, linear), in one run:
- shared_decode_ratio: 6 separate `extract_clips` runs / one `extract_clips_many` pass over the 6;
- rerun_ratio: the first full `run_plan` (extraction + probes) / the rerun with everything cached.

    python -m benchmarks.bench_eval [--quick]
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import vidcache  # noqa: F401  (before torch: OpenMP defaults)

from benchmarks.common import Report, best_of, parser
from vidcache.data.synth import SynthConfig, synthesize
from vidcache.evaluate.plan import parse_plan
from vidcache.evaluate.run import run_plan
from vidcache.extract.clips import ClipExtractConfig, extract_clips, extract_clips_many
from vidcache.models import create_backbone
from vidcache.models.checkpoint import make_checkpoint, save_checkpoint_atomic


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    quick = args.quick
    config = {"videos": 24 if quick else 96, "size": 32 if quick else 64, "frames": 16 if quick else 32,
              "checkpoints": 6, "probes": ["knn", "linear"], "protocol": "uniform:2", "workers": 2,
              "linear_epochs": 5 if quick else 20, "quick": quick}
    report = Report("eval", config, args.device)
    tmp = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    try:
        manifest = synthesize(tmp / "corpus", SynthConfig(videos=config["videos"], classes=4, seed=0,
                                                          size=config["size"], frames=config["frames"]))
        size = config["size"]
        paths = []
        for s in range(config["checkpoints"]):
            bb = create_backbone("tiny", seed=s, image_size=size)
            paths.append(save_checkpoint_atomic(
                make_checkpoint(bb.vit.config, bb.vit.state_dict(), step=1000 * (s + 1),
                                preprocess={"mean": list(bb.mean), "std": list(bb.std), "frame_stride": 2}),
                tmp / "run" / f"ckpt_{1000 * (s + 1):06d}.pt"))
        names = [f"vidcache:{p}" for p in paths]
        cfg = ClipExtractConfig(protocol=config["protocol"], workers=config["workers"], device=args.device)

        # (a) one decode pass for 6 backbones vs 6 extractions
        def separate():
            out = tmp / "sep"
            shutil.rmtree(out, ignore_errors=True)
            for i, n in enumerate(names):
                extract_clips(manifest, str(out / f"{i}.zarr"), ClipExtractConfig(
                    **{**cfg.__dict__, "backbone": n}))

        def shared():
            out = tmp / "shared"
            shutil.rmtree(out, ignore_errors=True)
            extract_clips_many(manifest, [str(out / f"{i}.zarr") for i in range(len(names))], cfg, names)

        repeat = 1 if quick else 2
        t_sep = best_of(separate, repeat)
        t_shared = best_of(shared, repeat)
        report.figure("separate_extractions_s", t_sep)
        report.figure("shared_decode_s", t_shared)
        ratio_a = t_sep / t_shared
        report.figure("shared_decode_ratio", ratio_a, "{:.2f}", unit="x")

        # (b) first full run vs rerun with everything cached
        plan = parse_plan({
            "run": {"workers": config["workers"], "device": args.device},
            "checkpoints": [{"path": str(tmp / "run" / "ckpt_*.pt")}],
            "datasets": [{"name": "synth", "manifest": str(tmp / "corpus" / "manifest.csv"),
                          "protocol": config["protocol"]}],
            "probes": [{"type": "knn"}, {"type": "linear", "epochs": config["linear_epochs"]}]})
        t = time.perf_counter()
        rows = run_plan(plan, tmp / "results")
        t_first = time.perf_counter() - t
        t_rerun = best_of(lambda: run_plan(plan, tmp / "results"), 3)
        report.figure("rows", len(rows))
        report.figure("first_run_s", t_first)
        report.figure("cached_rerun_s", t_rerun)
        ratio_b = t_first / t_rerun
        report.figure("rerun_ratio", ratio_b, "{:.1f}", unit="x")
        report.target("shared_decode_ratio", ratio_a, ">=", 1.5)
        report.target("rerun_ratio", ratio_b, ">=", 50)
        report.finish(args.out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
