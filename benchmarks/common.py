"""The one result format of every benchmark (DESIGN.md §6): `name: value` lines, verdicts, JSON rows.

A result file (`benchmarks/results/<name>.json`) is one JSON object:

    {"format": "vidcache-bench/1",
     "bench": "codec",                       # the script's area
     "run": {"quick": false, "date": "2026-12-01T19:55:00Z", "command": "...",
             "machine": {"cpu": "x86_64", "cores": 2, "device": "cpu"},
             "torch": "2.5.1", "python": "3.11.2"},
     "rows": [{"name": "encode_ratio", "value": 0.54, "unit": "x", "target": ">= 0.8", "met": false},
              {"name": "encode_s", "value": 1.2, "unit": "s", "target": null, "met": null}, ...],
     "config": {...}}                        # the sizes the script ran at, free-form

A row's `target` is `">= B"` or `"<= B"` (B a number) or null; `met` is the verdict of `value` against it
(null without a target; false when the value could not be measured). A row may carry a `note` (what
the bound is, e.g. the paper it comes from). `validate` checks all of that; `Report.finish` refuses to
write a file that fails it. `python -m benchmarks --summary` reads only this format.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import sys
import time
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
FORMAT = "vidcache-bench/1"
ROW_KEYS = ("name", "value", "unit", "target", "met")
_TARGET = re.compile(r"^(>=|<=) (-?\d+(?:\.\d+)?(?:e[-+]?\d+)?)$")
# Units read off a figure's name when the script gives none: (suffix, unit), first match wins.
_UNITS = (("_gflops", "GFLOP/s"), ("_MB_per_s", "MB/s"), ("_fps", "frames/s"), ("_seconds", "s"),
          ("_s", "s"), ("psnr", "dB"), ("top1", "%"))


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small sizes, same code path (< 1 min on 2 cores)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON path (default benchmarks/results/bench_<area>.json, bench_<area>_quick.json with --quick)")
    return p


def result_path(name: str, quick: bool) -> Path:
    """Where a run's file goes by default: a quick run never overwrites a full run's figures."""
    return RESULTS / f"{name}{'_quick' if quick else ''}.json"


def device_name(device: str = "cpu") -> str:
    if str(device).startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(0)
    return "cpu"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def run_info(quick: bool, device: str = "cpu") -> dict:
    """The run metadata of a result file: mode, date (UTC), command line, machine, library versions."""
    return {"quick": bool(quick), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": command_line(),
            "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                        "device": device_name(device)},
            "torch": _version("torch"), "python": platform.python_version()}


def command_line() -> str:
    """How the script was started, as `python -m benchmarks.<script> ARGS` (absolute paths by their name only)."""
    args = [Path(a).name if os.path.isabs(a) else a for a in sys.argv[1:]]
    return " ".join(["python", "-m", f"benchmarks.{Path(sys.argv[0]).stem}", *args])


def unit_of(name: str) -> str:
    """The unit a figure's name implies: `*_X_per_s` -> `X/s`, `*_s` -> `s`, `*psnr*` -> `dB`, ...; else ''."""
    m = re.search(r"_([A-Za-z]+)_per_s$", name)
    if m:
        return f"{m.group(1)}/s"
    for key, unit in _UNITS:
        if name.endswith(key) or (not key.startswith("_") and key in name):
            return unit
    return ""


def verdict(value, target: str) -> bool:
    """Whether `value` meets `target` (`">= B"` / `"<= B"`); a missing or non-finite value does not."""
    op, bound = _TARGET.match(target).groups()
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return False
    return value >= float(bound) if op == ">=" else value <= float(bound)


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def validate(doc) -> list[str]:
    """Every way `doc` departs from the result format, one message each (empty: it is valid)."""
    if not isinstance(doc, dict):
        return ["not a JSON object"]
    errs = []
    if doc.get("format") != FORMAT:
        errs.append(f"format is {doc.get('format')!r}, expected {FORMAT!r}")
    if not isinstance(doc.get("bench"), str) or not doc.get("bench"):
        errs.append("bench: missing (the script's area)")
    run = doc.get("run")
    if not isinstance(run, dict):
        errs.append("run: missing")
    else:
        if not isinstance(run.get("quick"), bool):
            errs.append("run.quick: must be true or false")
        if not isinstance(run.get("date"), str):
            errs.append("run.date: missing")
        machine = run.get("machine")
        if not isinstance(machine, dict) or not (machine.get("cores") is None or isinstance(machine["cores"], int)):
            errs.append("run.machine: must hold cores (an integer or null)")
        if "torch" not in run or not (run["torch"] is None or isinstance(run["torch"], str)):
            errs.append("run.torch: must be a version string or null")
    rows = doc.get("rows")
    if not isinstance(rows, list):
        return errs + ["rows: missing"]
    seen = set()
    for i, row in enumerate(rows):
        where = f"rows[{i}]"
        if not isinstance(row, dict) or any(k not in row for k in ROW_KEYS):
            errs.append(f"{where}: needs the keys {', '.join(ROW_KEYS)}")
            continue
        extra = set(row) - set(ROW_KEYS) - {"note"}
        name, value, target, met = row["name"], row["value"], row["target"], row["met"]
        where = f"row {name!r}"
        if extra:
            errs.append(f"{where}: unknown keys {', '.join(sorted(extra))}")
        if not isinstance(name, str) or not name:
            errs.append(f"rows[{i}]: name must be a non-empty string")
        elif name in seen:
            errs.append(f"{where}: appears twice")
        seen.add(name)
        if not (value is None or isinstance(value, str) or _number(value)):
            errs.append(f"{where}: value must be a number, a string or null")
        if not isinstance(row["unit"], str):
            errs.append(f"{where}: unit must be a string")
        if target is None:
            if met is not None:
                errs.append(f"{where}: met without a target")
        elif not isinstance(target, str) or not _TARGET.match(target):
            errs.append(f"{where}: target {target!r} is not '>= B' or '<= B'")
        elif not isinstance(met, bool) or met != verdict(value, target):
            errs.append(f"{where}: met is {met!r} but {value!r} {target} is {verdict(value, target)}")
    return errs


def load(path: Path) -> dict:
    """A result file, checked: ValueError naming the file and its first problems when it is not in the format."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{Path(path).name}: unreadable ({err})") from None
    errs = validate(doc)
    if errs:
        raise ValueError(f"{Path(path).name}: not in the {FORMAT} format: {'; '.join(errs[:3])}")
    return doc


class Report:
    """Collects rows, prints each as it comes, and writes the result file at the end."""

    def __init__(self, area: str, config: dict, device: str = "cpu", quick: bool | None = None):
        self.area, self.config, self.device = area, config, str(device)
        self.quick = bool(config.get("quick", False) if quick is None else quick)
        self.rows: dict[str, dict] = {}

    @property
    def figures(self) -> dict:
        return {name: row["value"] for name, row in self.rows.items()}

    def figure(self, name: str, value, fmt: str = "{:.4g}", unit: str | None = None) -> None:
        unit = unit_of(name) if unit is None else unit
        row = self.rows.setdefault(name, {"name": name, "value": None, "unit": unit, "target": None, "met": None})
        row.update(value=value, unit=unit)
        shown = fmt.format(value) if _number(value) else value
        print(f"{name}: {shown}{' ' + unit if unit else ''}", flush=True)

    def target(self, name: str, value, op: str, bound: float, unit: str | None = None, note: str = "") -> bool:
        """Records (or adds to the figure of that name) a target `value op bound`; returns the verdict."""
        if op not in (">=", "<="):
            raise ValueError(f"target op must be '>=' or '<=', not {op!r}")
        target = f"{op} {bound:g}"
        row = self.rows.setdefault(name, {"name": name, "value": value,
                                          "unit": unit_of(name) if unit is None else unit, "target": None, "met": None})
        if unit is not None:
            row["unit"] = unit
        row.update(value=value, target=target, met=verdict(value, target))
        if note:
            row["note"] = note
        return row["met"]

    def document(self) -> dict:
        return {"format": FORMAT, "bench": self.area, "run": run_info(self.quick, self.device),
                "rows": list(self.rows.values()), "config": self.config}

    def finish(self, out: Path | None = None) -> dict:
        for row in self.rows.values():
            if row["target"] is not None:
                v = row["value"]
                shown = f"{v:.4g}" if _number(v) else v
                print(f"{row['name']}: {shown} (target {row['target']}) {'ok' if row['met'] else 'MISSED'}")
        doc = json.loads(json.dumps(self.document(), default=_plain))
        errs = validate(doc)
        if errs:
            raise ValueError(f"benchmark {self.area} produced an invalid result: {'; '.join(errs)}")
        out = Path(out) if out else result_path(f"bench_{self.area}", self.quick)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=2) + "\n")
        return doc


def _plain(x):
    """numpy scalars and other stragglers as plain JSON values."""
    if hasattr(x, "item"):
        return x.item()
    return str(x)


def best_of(fn, repeat: int = 3) -> float:
    """Best wall time of `repeat` calls: the least noisy estimate on a shared machine."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best
