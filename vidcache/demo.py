"""`vidcache demo`: the whole workflow on the built-in synthetic corpus with the `tiny` backbone.

Each step calls the same library functions as the corresponding CLI command, and each step is
skipped when its output already exists (rerunning the demo resumes it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.table import Table

from vidcache.data.manifest import read_manifest


def run_demo(out_dir: str | Path, *, videos: int = 240, workers: int = 2, seed: int = 0,
             console: Console | None = None, progress: Callable | None = None) -> dict:
    """Synthesise the corpus, extract it with `tiny`, and report; returns a dict of results."""
    from vidcache.data.synth import SynthConfig, synthesize
    from vidcache.extract.clips import ClipExtractConfig, extract_clips
    from vidcache.cache import Store

    console = console or Console()
    out = Path(out_dir)
    results: dict = {}
    t_start = time.perf_counter()

    # 1. corpus
    manifest_path = out / "corpus" / "manifest.csv"
    if manifest_path.is_file():
        manifest = read_manifest(manifest_path)
        console.print(f"[1/2] corpus: reusing {len(manifest)} videos in {manifest_path.parent}")
    else:
        t = time.perf_counter()
        cfg = SynthConfig(videos=videos, classes=8, seed=seed)
        with _bar(progress, "synthesising corpus", videos) as update:
            manifest = synthesize(out / "corpus", cfg, progress=lambda d, n: update(d, n), overwrite=True)
        console.print(f"[1/2] corpus: {len(manifest)} mp4 videos, {len(manifest.classes)} classes "
                      f"({', '.join(manifest.classes)}) in {time.perf_counter() - t:.1f} s")

    # 2. clip store
    store_path = out / "clips_tiny.zarr"
    ecfg = ClipExtractConfig(backbone="tiny", protocol="uniform:4", tokens="pool:2,4,4", workers=workers)
    t = time.perf_counter()
    with _bar(progress, "extracting clips (tiny)", len(manifest)) as update:
        summary = extract_clips(manifest, str(store_path), ecfg, progress=lambda d, n, c: update(d, n))
    store = Store.open(store_path)
    info = store.info()
    console.print(f"[2/2] clip store {store_path}: {info['counts']['done']} done, {info['counts']['failed']} failed; "
                  f"emb {info['arrays']['clips/emb']['shape']}, tokens {info['arrays']['clips/tokens']['shape']}; "
                  f"{info['bytes_on_disk'] / 1e6:.1f} MB; {summary.videos} videos extracted this run in "
                  f"{time.perf_counter() - t:.1f} s")
    results["store"] = info

    table = Table(title="vidcache demo")
    table.add_column("step")
    table.add_column("result")
    table.add_row("corpus", f"{len(manifest)} videos, splits {manifest.counts()}")
    table.add_row("clip store", f"{store_path} ({info['config_hash'][:12]})")
    console.print(table)
    console.print(f"demo finished in {time.perf_counter() - t_start:.1f} s; outputs in {out}")
    return results


class _NullBar:
    def __enter__(self):
        return lambda *a, **k: None

    def __exit__(self, *exc):
        return False


def _bar(progress: Callable | None, description: str, total: int):
    return progress(description, total) if progress is not None else _NullBar()
