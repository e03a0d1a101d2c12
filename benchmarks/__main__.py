"""`python -m benchmarks`: every benchmark in quick mode, then one table of values, targets and verdicts.

    python -m benchmarks [AREA ...] [--device cuda]   # run (quick), then the table of those runs
    python -m benchmarks --summary [DIR] [--all]      # only the table of the result files in DIR

Each script runs in its own process (so one's threads and memory do not colour another's) and writes
benchmarks/results/bench_<area>_quick.json in the one result format of benchmarks/common.py; the table
reads that format only (a file in any other shape is named and skipped). Extra arguments are passed to
every script. The table shows the rows with a target; `--all` shows every row.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.common import RESULTS, load, result_path  # noqa: E402

AREAS = ["startup", "store", "extract", "codec", "probe", "attentive", "scale", "pretrain", "eval", "dense", "fidelity"]
COLUMNS = ("result", "mode", "figure", "value", "target", "verdict")


def _value(row: dict) -> str:
    v = row["value"]
    if v is None:
        return "not measured"
    text = f"{v:.4g}" if isinstance(v, (int, float)) else str(v)
    return f"{text} {row['unit']}".strip()


def table_rows(paths, all_rows: bool = False) -> tuple[list[tuple], list[str]]:
    """The table's rows for the result files `paths`, and one line per file skipped (not in the format)."""
    rows, skipped = [], []
    for path in paths:
        try:
            doc = load(path)
        except ValueError as err:
            skipped.append(f"skipped {err}")
            continue
        name, mode = Path(path).stem, "quick" if doc["run"]["quick"] else "full"
        shown = [r for r in doc["rows"] if all_rows or r["target"] is not None]
        for r in shown:
            verdict = "" if r["target"] is None else ("ok" if r["met"] else "MISSED")
            rows.append((name, mode, r["name"], _value(r), r["target"] or "", verdict))
        n = len(doc["rows"]) - len(shown)
        if n:
            rows.append((name, mode, f"({n} figure{'s' if n > 1 else ''} without a target)", "", "", ""))
    return rows, skipped


def render(rows: list[tuple]) -> str:
    """A markdown table: one header, one line per row, columns padded to their widest cell."""
    cells = [COLUMNS, *rows]
    widths = [max(len(str(r[i])) for r in cells) for i in range(len(COLUMNS))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(COLUMNS), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def summary(results: Path = RESULTS, all_rows: bool = False, paths=None) -> str:
    paths = sorted(Path(results).glob("*.json")) if paths is None else paths
    rows, skipped = table_rows(paths, all_rows)
    return "\n".join([render(rows), *skipped])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    all_rows = "--all" in argv
    argv = [a for a in argv if a != "--all"]
    if "--summary" in argv:
        rest = argv[argv.index("--summary") + 1:]
        results = Path(rest[0]) if rest else RESULTS
        if not results.is_dir():
            print(f"error: --summary {results}: no such folder of result files", file=sys.stderr)
            return 2
        print(summary(results, all_rows))
        return 0
    only = [a for a in argv if not a.startswith("-") and a in AREAS]
    extra = [a for a in argv if a not in only]
    failed, written = [], []
    for area in only or AREAS:
        print(f"== bench_{area} (quick)", flush=True)
        t = time.perf_counter()
        rc = subprocess.call([sys.executable, "-m", f"benchmarks.bench_{area}", "--quick", *extra], cwd=HERE.parent)
        print(f"   {time.perf_counter() - t:.0f} s", flush=True)
        if rc != 0:
            failed.append(f"bench_{area} (exit {rc})")
        else:
            written.append(result_path(f"bench_{area}", quick=True))
    print("benchmarks (quick mode; ratios are comparable across machines, absolute times are not)")
    print(summary(all_rows=all_rows, paths=written))
    for f in failed:
        print(f"failed: {f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
