"""CLI start-up time: `vidcache --version`, `--help` and sub-command helps against a bare interpreter.

Each command runs in a fresh `python` process (`python -m vidcache ...`, this checkout's package),
round-robin so that a busy moment of a shared machine falls on every command alike; the figure is
the median wall time of `--runs` rounds. Target: every help within 0.3 s of `python -c pass`.

Usage: python -m benchmarks.bench_startup [--quick] [--runs N]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import Report, parser  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {  # name -> argv after `python`
    "bare_python": ["-c", "pass"],
    "version": ["-m", "vidcache", "--version"],
    "help": ["-m", "vidcache", "--help"],
    "probe_linear_help": ["-m", "vidcache", "probe", "linear", "--help"],
    "extract_clips_help": ["-m", "vidcache", "extract", "clips", "--help"],
}
TARGET_OVER_BARE_S = 0.3


def wall_times(runs: int) -> dict[str, list[float]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "COLUMNS": "100"}
    times = {name: [] for name in COMMANDS}
    for _ in range(runs):
        for name, argv in COMMANDS.items():
            t = time.perf_counter()
            r = subprocess.run([sys.executable, *argv], env=env, cwd=ROOT, capture_output=True, text=True)
            times[name].append(time.perf_counter() - t)
            if r.returncode != 0:
                raise SystemExit(f"{' '.join(argv)} exited {r.returncode}: {r.stderr.strip()[-500:]}")
    return times


def main(argv=None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=None, help="rounds (default 10, 3 with --quick)")
    args = p.parse_args(argv)
    runs = args.runs or (3 if args.quick else 10)
    rep = Report("startup", {"quick": args.quick, "runs": runs, "statistic": "median",
                             "commands": {k: " ".join(["python", *v]) for k, v in COMMANDS.items()}})
    times = wall_times(runs)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    for name, value in med.items():
        rep.figure(f"{name}_s", value, "{:.3f}")
    for name, value in med.items():
        if name != "bare_python":
            rep.target(f"{name}_over_bare_s", value - med["bare_python"], "<=", TARGET_OVER_BARE_S, unit="s")
    return rep.finish(args.out)


if __name__ == "__main__":
    main()
