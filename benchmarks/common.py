"""Shared reporting for benchmark scripts (DESIGN.md §6): `name: value` lines, verdicts, JSON."""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small sizes, same code path (< 1 min on 2 cores)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/bench_<area>.json)")
    return p


def device_name(device: str = "cpu") -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(0)
    import os

    return f"{platform.processor() or platform.machine()} x{os.cpu_count()} cores"


class Report:
    """Collects figures and targets, prints them as they come, and writes the JSON at the end."""

    def __init__(self, area: str, config: dict, device: str = "cpu"):
        self.area, self.config, self.device = area, config, device
        self.figures: dict[str, float] = {}
        self.targets: dict[str, dict] = {}

    def figure(self, name: str, value, fmt: str = "{:.4g}") -> None:
        self.figures[name] = value
        print(f"{name}: {fmt.format(value) if isinstance(value, (int, float)) else value}", flush=True)

    def target(self, name: str, value: float, op: str, bound: float) -> bool:
        ok = value >= bound if op == ">=" else value <= bound
        self.targets[name] = {"value": value, "target": f"{op} {bound}", "ok": bool(ok)}
        return ok

    def finish(self, out: Path | None = None) -> dict:
        for name, t in self.targets.items():
            print(f"{name}: {t['value']:.3g} (target {t['target']}) {'ok' if t['ok'] else 'MISSED'}")
        out = out or RESULTS / f"bench_{self.area}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        doc = {"figures": self.figures, "targets": self.targets, "config": self.config,
               "device": device_name(self.device), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
        return doc


def best_of(fn, repeat: int = 3) -> float:
    """Best wall time of `repeat` calls: the least noisy estimate on a shared machine."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best
