"""`python -m benchmarks`: every benchmark in quick mode, then one table of figures and verdicts.

Each script runs in its own process (so one's threads and memory do not colour another's) and writes
benchmarks/results/bench_<area>.json; this reads them back. Extra arguments (e.g. --device cuda) are
passed to every script.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
AREAS = ["store", "extract", "codec", "probe", "scale", "pretrain", "eval", "dense", "fidelity"]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    only = [a for a in argv if not a.startswith("-") and a in AREAS]
    extra = [a for a in argv if a not in only]
    failed = []
    rows = []
    for area in only or AREAS:
        script = HERE / f"bench_{area}.py"
        if not script.is_file():
            continue
        print(f"== bench_{area} (quick)", flush=True)
        t = time.perf_counter()
        rc = subprocess.call([sys.executable, "-m", f"benchmarks.bench_{area}", "--quick", *extra], cwd=HERE.parent)
        if rc != 0:
            failed.append(area)
            rows.append((area, "-", "script failed", f"exit {rc}", ""))
            continue
        doc = json.loads((HERE / "results" / f"bench_{area}.json").read_text())
        for name, tgt in doc.get("targets", {}).items():
            if isinstance(tgt, dict):
                value = tgt.get("value")
                rows.append((area, name, f"{value:.3g}" if isinstance(value, (int, float)) else str(value),
                             str(tgt.get("target", "")), "ok" if tgt.get("ok") else "MISSED"))
            else:  # a script that records its verdict as one line
                rows.append((area, name, str(tgt), "", ""))
        if not doc.get("targets"):
            rows.append((area, "(figures only)", "", "", ""))
        print(f"   {time.perf_counter() - t:.0f} s", flush=True)
    from rich.console import Console
    from rich.table import Table

    table = Table(title="benchmarks (quick mode; ratios are comparable across machines, absolute times are not)")
    for col in ("area", "figure", "value", "target", "verdict"):
        table.add_column(col)
    for r in rows:
        table.add_row(*r)
    Console().print(table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
