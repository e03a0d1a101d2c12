"""SCALE training throughput vs end-to-end training of a ViT-B video backbone (thesis Table 4.1).

Side by side on one device, in one run:
- SCALE: training steps of the predictor (2 layers, hidden 256) with both losses, on cached
  ViT-B-sized clip embeddings (16 clips of 768 floats per video, float16 as stored), batch 2,048
  videos, exactly the loop `vidcache scale train` runs (ClipSets batches + train_step).
- End-to-end: training steps (forward, backward, AdamW) of vidcache.models.vit vit_base on
  16 x 224 x 224 clips (tubelet 2, patch 16: 1,568 tokens), the cost every sample pays when the
  backbone is not frozen and cached. Its loss is a plain function of the pooled tokens: any real
  objective (VideoMAE's decoder, a second view) only adds work, so the ratio is a lower bound.

Figure: speedup = SCALE samples/s / backbone samples/s; the thesis reports 9,224 / 33.5 = 275x on
an RTX 3090. `--quick` keeps the same code path with smaller sizes (SCALE batch 128; the backbone
on 8 x 112 x 112 clips), so its ratio is not comparable with the target and is reported as such.
"""

from __future__ import annotations

import time

import numpy as np

import vidcache  # noqa: F401  (before torch: its OpenMP defaults apply only then)
import torch

from benchmarks.common import Report, parser
from vidcache.models.vit import vit_base
from vidcache.scale.config import ScaleConfig
from vidcache.scale.data import ClipSets
from vidcache.scale.model import SCALEModel
from vidcache.scale.train import make_optimizer, train_step

PAPER_RATIO = 9224.65 / 33.54


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def scale_throughput(batch: int, steps: int, device: torch.device, dim: int = 768, clips: int = 16) -> float:
    """Samples (videos) per second of SCALE training steps, data sampling included."""
    cfg = ScaleConfig(batch_size=batch, clips_per_set=clips // 2)
    rng = np.random.default_rng(0)
    videos = batch * (steps + 2)
    emb = rng.standard_normal((videos, clips, dim), dtype=np.float32).astype(np.float16)
    box = rng.random((videos, clips, 6), dtype=np.float32)
    data = ClipSets.from_arrays(emb, box, device)
    torch.manual_seed(0)
    model = SCALEModel.from_config(dim, cfg).to(device).train()
    opt = make_optimizer(model, cfg)
    it = data.epoch(0, batch, cfg.clips_per_set, cfg.num_masked, seed=0,
                    mask_ratio=cfg.mask_ratio if cfg.bernoulli_masking else None)
    for _ in range(2):  # warm-up: allocator, kernels, Adam state
        train_step(model, opt, *next(it), cfg.temperature)
    _sync(device)
    t = time.perf_counter()
    n = 0
    for _ in range(steps):
        e, b, m = next(it)
        train_step(model, opt, e, b, m, cfg.temperature)
        n += len(e)
    _sync(device)
    return n / (time.perf_counter() - t)


def backbone_throughput(batch: int, steps: int, device: torch.device, frames: int, size: int) -> float:
    """Samples per second of training steps of a ViT-B video backbone (tubelet 2, patch 16)."""
    torch.manual_seed(0)
    vit = vit_base(img_size=size, num_frames=frames, patch_size=16, tubelet_size=2).to(device).train()
    opt = torch.optim.AdamW([p for p in vit.parameters() if p.requires_grad], lr=1e-4)
    x = torch.randn(batch, 3, frames, size, size, device=device)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)

    def step():
        with amp:
            loss = vit(x).float().mean(1).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return batch * steps / (time.perf_counter() - t)


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda asked for but CUDA is not available")
    gpu = device.type == "cuda"
    if args.quick:
        cfg = dict(scale_batch=128, scale_steps=2, vit_batch=1, vit_steps=1, frames=8, size=112)
    else:
        cfg = dict(scale_batch=2048, scale_steps=20 if gpu else 3, vit_batch=8 if gpu else 1,
                   vit_steps=10 if gpu else 2, frames=16, size=224)
    rep = Report("scale", {**cfg, "dim": 768, "clips": 16, "hidden": 256, "depth": 2, "quick": args.quick,
                           "threads": torch.get_num_threads()}, args.device)
    s = scale_throughput(cfg["scale_batch"], cfg["scale_steps"], device)
    rep.figure("scale_samples_per_s", s, "{:.1f}")
    b = backbone_throughput(cfg["vit_batch"], cfg["vit_steps"], device, cfg["frames"], cfg["size"])
    rep.figure("vit_b_samples_per_s", b, "{:.3f}")
    ratio = s / b
    rep.figure("paper_ratio", PAPER_RATIO, "{:.0f}", unit="x")
    if args.quick:
        rep.figure("speedup_quick_sizes", ratio, "{:.0f}", unit="x")
        rep.figure("note", "quick sizes (8x112x112 backbone clips): not comparable with the 275x target")
    else:
        rep.figure("speedup", ratio, "{:.0f}", unit="x")
        rep.target("speedup", ratio, ">=", 275)
    rep.finish(args.out)


if __name__ == "__main__":
    main()
