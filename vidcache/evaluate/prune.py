"""`vidcache cache prune`: remove clip stores that no plan needs any more, after listing them.

Stores live under RESULTS_DIR/stores/<dataset>/. A store is kept when the plan (if given) needs it,
i.e. some checkpoint of the plan on some dataset of the plan maps to it, and when it was used more
recently than `older_than_s` (if given). Probe results and rows are kept: they are small and stay
the record of what was measured; the `.json` beside each store keeps its FLOPs for the table.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from vidcache.errors import VidcacheError
from vidcache.evaluate.plan import Plan


@dataclass
class PruneItem:
    path: str
    bytes: int
    age_s: float
    reason: str


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _last_used(path: Path) -> float:
    """Latest modification inside the store (its status array changes whenever a block is written)."""
    return max((f.stat().st_mtime for f in path.rglob("*") if f.is_file()), default=path.stat().st_mtime)


def needed_stores(plan: Plan, results_dir: str | Path) -> set[str]:
    """Store paths the plan maps to (checkpoints are read, and loaded where their store is unknown)."""
    import dataclasses

    from vidcache.cache import manifest_digest
    from vidcache.config import config_hash, hashed_dict
    from vidcache.data.manifest import read_manifest
    from vidcache.evaluate.checkpoints import IdentityCache, identity, inspect, load_backbone, resolve_checkpoints
    from vidcache.evaluate.run import store_path
    from vidcache.extract.clips import ClipExtractConfig, make_job
    import torch

    results_dir = Path(results_dir)
    cache = IdentityCache(results_dir / "index")
    refs = resolve_checkpoints(plan)
    out: set[str] = set()
    for ds in plan.datasets:
        mdigest = manifest_digest(read_manifest(ds.manifest))
        ecfg = ClipExtractConfig(protocol=ds.protocol, tokens=ds.tokens, clip_len=ds.clip_len, stride=ds.stride,
                                 crop_fraction=ds.crop_fraction, dtype=ds.dtype, batch_size=plan.run.batch_size,
                                 workers=plan.run.workers, device="cpu", decode_timeout=plan.run.decode_timeout)
        ekey = config_hash({"extract": hashed_dict(ecfg), "manifest": mdigest})
        for ref in refs:
            key = identity(ref)
            known = cache.get(key).get("stores", {}).get(ekey)
            if known:
                out.add(str(store_path(results_dir, ds.name, known["store_hash"], mdigest)))
                continue
            try:
                bb = load_backbone(ref, inspect(ref)["format"])
            except VidcacheError:
                continue  # a checkpoint that does not load has no store to keep
            job = make_job(dataclasses.replace(ecfg, backbone=bb.name, backbone_options=dict(ref.options)),
                           bb, torch.device("cpu"))
            out.add(str(store_path(results_dir, ds.name, config_hash(job.store_config()), mdigest)))
    return out


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


def parse_duration(text: str | float) -> float:
    """Seconds in an age such as `30d`, `12h`, `45m`, `90s` or `2w`; a bare number counts days.

    Negative or malformed ages raise a one-line VidcacheError.
    """
    raw = str(text).strip().lower()
    unit = raw[-1:] if raw[-1:] in _UNITS else "d"
    number = raw[:-1] if raw[-1:] in _UNITS else raw
    try:
        value = float(number)
    except ValueError:
        raise VidcacheError(f"--older-than {text!r} is not an age; give a number with a unit: 30d, 12h, 45m or 90s "
                            f"(a bare number counts days)") from None
    if not value >= 0 or value == float("inf"):
        raise VidcacheError(f"--older-than {text!r} must be a finite age >= 0 (e.g. 30d)")
    return value * _UNITS[unit]


def prune(results_dir: str | Path, plan: Plan | None = None, older_than_s: float | None = None,
          dry_run: bool = True) -> list[PruneItem]:
    """The stores to delete (deleted unless `dry_run`): not needed by `plan`, and/or unused for longer
    than `older_than_s` seconds. With both, a store must match both to go. With neither, nothing goes.
    """
    results_dir = Path(results_dir)
    root = results_dir / "stores"
    if plan is None and older_than_s is None:
        raise VidcacheError("prune needs a plan (--plan, keep what it needs) or an age (--older-than)")
    if older_than_s is not None and not older_than_s >= 0:
        raise VidcacheError(f"older_than_s must be >= 0, got {older_than_s}")
    if not root.is_dir():
        return []
    needed = needed_stores(plan, results_dir) if plan is not None else None
    now = time.time()
    items = []
    for store in sorted(root.glob("*/*.zarr")):
        age = now - _last_used(store)
        reasons = []
        if needed is not None:
            if str(store) in needed:
                continue
            reasons.append("not needed by the plan")
        if older_than_s is not None:
            if age < older_than_s:
                continue
            reasons.append(f"unused for {age / 86400:.1f} days")
        items.append(PruneItem(str(store), _size(store), age, "; ".join(reasons)))
    if not dry_run:
        for item in items:
            shutil.rmtree(item.path, ignore_errors=True)
    return items
