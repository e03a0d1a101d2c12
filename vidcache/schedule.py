"""Warm-up + cosine schedules: the one schedule module of the probes, SCALE and pretraining.

Plain functions of the iteration number (torch-free, importing no stage). `step` is the 0-based
index of the optimiser step about to be taken; `rule` says which point of the curve that step reads,
because the references differ by one:

- `"torch"`: step k reads the curve at t = k. A torch `LambdaLR` / `CosineAnnealingLR` stepped after
  `optimizer.step()` does this: the first step runs at `start` (at `peak` without warm-up) and the
  last one just above `final`. DINOv2's linear eval (`dinov2/eval/linear.py`: CosineAnnealingLR, no
  warm-up) and SCALE (Separius/SCALE `src/train.py`: `warm_up_cosine_lr_scheduler`, a LambdaLR with
  `k / warm_up_iterations` then a cosine, stepped after the optimiser) count so.
- `"jepa"`: step k reads t = k + 1. facebookresearch/jepa's and vjepa2's `WarmupCosineSchedule` and
  `CosineWDSchedule` (`src/utils/schedulers.py`) increment their counter before computing and are
  stepped before each iteration's forward (`evals/video_classification_frozen/eval.py`,
  `app/vjepa/train.py`): the first step already runs one step into the curve, the last at `final`.

The curve itself is the references': linear from `start` (t = 0) to `peak` (t = warmup), then half a
cosine from `peak` to `final` at t = total, held at `final` after it. `warmup` may be fractional
(SCALE's is 5 % of the steps, unrounded).
"""

from __future__ import annotations

import math

RULES = ("torch", "jepa")


def position(step: int, rule: str = "torch") -> int:
    """The point t of the curve that 0-based step `step` reads under `rule`."""
    if rule == "torch":
        return step
    if rule == "jepa":
        return step + 1
    raise ValueError(f"schedule rule must be one of {', '.join(RULES)}, got {rule!r}")


def warmup_cosine(step: int, *, total: float, warmup: float, peak: float, start: float = 0.0,
                  final: float = 0.0, rule: str = "torch") -> float:
    """Linear warm-up from `start` to `peak` over `warmup` steps, then a cosine to `final` at `total`."""
    t = position(step, rule)
    if t < warmup:
        return start + (peak - start) * t / max(1.0, warmup)
    progress = min(1.0, (t - warmup) / max(1.0, total - warmup))
    return final + (peak - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def cosine(step: int, *, total: float, start: float, final: float, rule: str = "torch") -> float:
    """Half a cosine from `start` (t = 0) to `final` (t = total), increasing when final > start
    (jepa's `CosineWDSchedule`: weight decay 0.04 -> 0.4 in pretraining, 0.01 -> 1e-6 in its eval)."""
    return warmup_cosine(step, total=total, warmup=0, peak=start, final=final, rule=rule)


def linear(step: int, *, total: float, start: float, final: float, rule: str = "torch") -> float:
    """A straight line from `start` (t = 0) to `final` (t = total), held after it (jepa's EMA momentum)."""
    t = position(step, rule)
    return start + (final - start) * min(1.0, t / max(1.0, total))
