"""`vidcache eval watch DIR --plan PLAN`: evaluate each new checkpoint of a training run as it appears.

A file is taken once it is completely written: its size and modification time are unchanged over
`settle_polls` consecutive polls (a trainer that writes in place), or at once when it appeared by
an atomic rename (`save_checkpoint_atomic`'s hidden temp files are ignored, so only the final name
is ever seen). Each ready file is evaluated with the plan's datasets and probes and its rows go to
the same results table. Ctrl-C stops between polls or after the current checkpoint's rows.
"""

from __future__ import annotations

import fnmatch
import threading
import time
from pathlib import Path
from typing import Callable

from vidcache.errors import VidcacheError
from vidcache.evaluate.checkpoints import CheckpointRef, _options_label, step_from_name
from vidcache.evaluate.plan import Plan


def _candidates(folder: Path, patterns: list[str]) -> list[Path]:
    out = []
    for p in folder.iterdir():
        # Hidden names are temp files of an atomic writer (`.ckpt.pt.tmp-123`) or editor leftovers.
        if p.name.startswith(".") or ".tmp" in p.name or not p.is_file():
            continue
        if any(fnmatch.fnmatch(p.name, pat) for pat in patterns):
            out.append(p)
    return out


def watch(folder: str | Path, plan: Plan, results_dir: str | Path, *, poll_s: float = 10.0,
          settle_polls: int = 2, stop: threading.Event | None = None, max_polls: int | None = None,
          format: str = "auto", run_name: str = "", on_rows: Callable[[list[dict]], None] | None = None,
          live: bool = False, options: dict | None = None) -> list[str]:
    """Poll `folder` and evaluate each checkpoint once it is completely written; returns the files done.

    `options` are backbone options for every checkpoint (e.g. {"feature": "cls"}: a TDV run's
    frame encoder evaluated on its class token, as TDV's online kNN does).
    Files that are already there when watching starts are evaluated too (those already in the
    results are skipped by the cache). `stop` (a threading.Event) or `max_polls` end the loop; so
    does Ctrl-C, cleanly. `on_rows(rows)` gets the rows of each evaluated checkpoint.
    """
    from vidcache.evaluate.report import write_results
    from vidcache.evaluate.run import run_plan

    folder = Path(folder)
    if not folder.is_dir():
        raise VidcacheError(f"cannot watch {folder}: not a folder (give the training run's checkpoint folder)")
    patterns = list(plan.run.watch_patterns)
    seen: dict[Path, tuple[int, int, int]] = {}  # path -> (size, mtime_ns, polls unchanged)
    done: set[Path] = set()
    evaluated: list[str] = []
    polls = 0
    try:
        while not (stop is not None and stop.is_set()) and (max_polls is None or polls < max_polls):
            polls += 1
            ready = []
            for p in _candidates(folder, patterns):
                if p in done:
                    continue
                try:
                    st = p.stat()
                except FileNotFoundError:  # renamed or removed since listing
                    continue
                sig = (st.st_size, st.st_mtime_ns)
                prev = seen.get(p)
                same = prev is not None and prev[:2] == sig
                count = prev[2] + 1 if same else 1
                seen[p] = (*sig, count)
                if count >= settle_polls and st.st_size > 0:
                    ready.append(p)
            ready.sort(key=lambda p: (step_from_name(p.name)[0] is None, step_from_name(p.name)[0] or 0, p.name))
            for p in ready:
                ref = CheckpointRef(label=str(p) + (_options_label(options) if options else ""), backbone=format,
                                    options=dict(options or {}), run=run_name or folder.name,
                                    path=str(p), trust=plan.run.trust_checkpoint)
                rows = run_plan(plan, results_dir, refs=[ref], write_table=False, live=live)
                done.add(p)
                evaluated.append(str(p))
                if on_rows is not None:
                    on_rows([r for r in rows if r.get("checkpoint") == ref.label])
                write_results(results_dir)
                if stop is not None and stop.is_set():
                    break
            if stop is not None:
                stop.wait(poll_s)
            else:
                time.sleep(poll_s)
    except KeyboardInterrupt:
        pass  # Ctrl-C: the rows written so far are complete; the next start resumes from them
    return evaluated
