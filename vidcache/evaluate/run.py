"""`vidcache eval run`: every checkpoint x dataset x probe of a plan, cached by content, resumable.

For each dataset, checkpoints are loaded a few at a time; each one's store is found by its config
hash (which covers the weights digest) under RESULTS_DIR/stores/<dataset>/, or extracted, with
every checkpoint that preprocesses alike sharing one decode pass (`run_extractions`). Then each
probe runs unless its result already exists for the same store hash and probe config hash.

Layout of RESULTS_DIR:

    stores/<dataset>/<config_hash[:16]>-<manifest[:8]>.zarr   clip stores (+ .json: hash, FLOPs)
    probes/<config_hash[:16]>/<probe>-<probe_hash[:12]>/      run_probe's results.json, weights
    rows/<row key>.json                                       one file per table row
    results.json, results.csv, plots/*.png                    the table, rebuilt from rows/

Nothing is appended in place: every finished unit (a store block, a probe directory, a row) is
written to a temporary name and renamed, so a run killed at any point resumes without repeating a
finished probe and without losing or duplicating a row. Several processes (one per GPU) share a
plan by taking checkpoints i % world == rank; their rows merge into the same table.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from vidcache.config import canonical_json, config_hash, hashed_dict, save_json
from vidcache.errors import VidcacheError
from vidcache.evaluate.checkpoints import (CheckpointRef, IdentityCache, identity, inspect, load_backbone,
                                           resolve_checkpoints)
from vidcache.evaluate.plan import DatasetSpec, Plan, ProbeSpec
from vidcache.evaluate.report import ROW_FIELDS  # noqa: F401  (the report's schema, used by callers of run)



@dataclass
class _Unit:
    """One checkpoint on one dataset: its store and the probes still to run."""

    ref: CheckpointRef
    step: tuple
    pretrain_flops: int | None = None
    backbone: Any = None
    job: Any = None
    store_hash: str = ""
    store_url: str = ""
    weights: str = ""
    error: str = ""
    extract_s: float = 0.0


def probe_hash(probe: ProbeSpec, cfg: Any) -> str:
    """Hash of what changes a probe's result: its type and its config's hashed fields."""
    if isinstance(cfg, dict):  # scale: {"train": ScaleConfig, "eval": ScaleEvalConfig}
        body = {k: hashed_dict(v) for k, v in cfg.items()}
    else:
        body = hashed_dict(cfg)
    return config_hash({"type": probe.type, "config": body})


def store_path(results_dir: Path, dataset: str, store_hash: str, manifest_digest: str) -> Path:
    return results_dir / "stores" / dataset / f"{store_hash[:16]}-{manifest_digest[:8]}.zarr"


def probe_dir(results_dir: Path, store_hash: str, probe: ProbeSpec, phash: str) -> Path:
    return results_dir / "probes" / store_hash[:16] / f"{probe.name}-{phash[:12]}"


def _row_key(row: dict) -> str:
    ident = [row["checkpoint"], row.get("weights") or "", row["dataset"], row["probe"], row.get("probe_hash") or ""]
    return hashlib.sha256(canonical_json(ident).encode()).hexdigest()[:24]


def _write_row(results_dir: Path, row: dict) -> None:
    save_json(row, results_dir / "rows" / f"{_row_key(row)}.json")


def _drop_error_rows(results_dir: Path, checkpoint: str, dataset: str) -> None:
    """A checkpoint that loads now replaces the error rows an earlier attempt left."""
    for f in (results_dir / "rows").glob("*.json"):
        try:
            row = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if row.get("status") == "error" and row.get("checkpoint") == checkpoint and row.get("dataset") == dataset:
            f.unlink(missing_ok=True)


def _store_complete(url: Path) -> bool:
    from vidcache.cache import Store

    if not Store.exists(url):
        return False
    try:
        return Store.open(url).counts()["pending"] == 0
    except VidcacheError:
        return False


def _store_facts(url: Path) -> dict:
    """Facts of a store the table needs (FLOPs per clip), kept beside it so `prune` can drop the store."""
    side = url.with_suffix(".json")
    if side.is_file():
        try:
            return json.loads(side.read_text())
        except json.JSONDecodeError:
            pass
    from vidcache.cache import Store

    if not Store.exists(url):
        return {}

    store = Store.open(url)
    facts = {"config_hash": store.config_hash, "flops_per_clip": store.attrs.get("flops_per_clip"),
             "counts": store.counts(), "backbone": store.config.get("backbone", {}).get("name", ""),
             "num_clips": store.attrs.get("num_clips")}
    if facts["counts"]["pending"] == 0:
        save_json(facts, side)
    return facts


def _metric(res: dict) -> float | None:
    """The run's reported top-1: test (selected on val), or the best val score with report=best-val.

    Dense probes report J&F (propagate) or mIoU (retrieval; linseg's test mIoU, else its val mIoU)."""
    if res.get("probe") == "propagate":
        return res.get("JF_mean")
    if res.get("probe") == "retrieval":
        return res.get("mIoU")
    if res.get("probe") == "linseg":
        return (res.get("test") or res.get("val") or {}).get("mIoU")
    rep = res.get("reported")
    if rep:
        return rep.get("top1")
    test = res.get("test") or {}
    return test.get("top1")


def _base_row(unit: _Unit, ds: DatasetSpec, probe: ProbeSpec, phash: str) -> dict:
    step, unit_name, source = unit.step
    return {"checkpoint": unit.ref.label, "run": unit.ref.run, "step": step, "step_unit": unit_name,
            "step_source": source, "pretrain_flops": unit.pretrain_flops, "dataset": ds.name, "probe": probe.name,
            "probe_type": probe.type, "probe_hash": phash, "store_hash": unit.store_hash, "store": unit.store_url,
            "weights": unit.weights, "extract_s": round(unit.extract_s, 3), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _rows_from_result(base: dict, probe: ProbeSpec, res: dict, cached: bool, seconds: float,
                      flops: Any) -> list[dict]:
    # The probe's own duration (recorded in its results), not this run's near-zero time for a cached one.
    took = (res.get("timings") or {}).get("total_s") or res.get("seconds") or seconds
    common = {**base, "status": "ok", "cached": cached, "probe_s": round(float(took), 3), "flops_per_clip": flops,
              "error": ""}
    if probe.type == "scale":
        return [{**common, "probe": f"{probe.name}:{r['method']}", "metric": r.get("test_top1"),
                 "test_top1": r.get("test_top1"), "val_top1": r.get("val_top1"), "test_top5": r.get("test_top5"),
                 "test_mean_class_acc": r.get("test_mean_class_acc"), "selected": r.get("selected")}
                for r in res.get("table", [])]
    test, val = res.get("test") or {}, res.get("val") or {}
    return [{**common, "metric": _metric(res), "test_top1": test.get("top1"), "val_top1": val.get("top1"),
             "test_top5": test.get("top5"), "test_mean_class_acc": test.get("mean_class_acc"),
             "selected": res.get("selected"), "report": res.get("report", "test")}]


def _error_rows(base: dict, probe: ProbeSpec, error: str) -> list[dict]:
    return [{**base, "status": "error", "cached": False, "error": error, "metric": None}]


def _run_probe(probe: ProbeSpec, cfg: Any, store_url: str, out: Path) -> dict:
    """Run one probe into a temp folder, then rename it into place: a kill leaves no half result."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    if probe.type == "scale":
        from vidcache.scale.evaluate import evaluate_run
        from vidcache.scale.train import train_from_store

        train_from_store(store_url, tmp / "scale_run", cfg["train"], overwrite=True)
        res = evaluate_run(tmp / "scale_run", store_url, store_url, tmp, cfg["eval"])
    elif probe.type in ("propagate", "retrieval", "linseg"):
        from vidcache.dense.linseg import run_linseg
        from vidcache.dense.propagate import run_propagate
        from vidcache.dense.retrieval import run_retrieval

        run = {"propagate": run_propagate, "retrieval": run_retrieval, "linseg": run_linseg}[probe.type]
        res = run(store_url, tmp, cfg)
    else:
        from vidcache.probe.run import run_probe

        res = run_probe(probe.type, store_url, tmp, cfg)
    save_json({"done": True}, tmp / "DONE")
    try:
        os.replace(tmp, out)
    except OSError:  # another process finished the same probe first: keep its result
        shutil.rmtree(tmp, ignore_errors=True)
    return res


def _cached_result(out: Path, store_hash: str) -> dict | None:
    if not (out / "DONE").is_file() or not (out / "results.json").is_file():
        return None
    try:
        res = json.loads((out / "results.json").read_text())
    except json.JSONDecodeError:
        return None
    stored = res.get("config_hash") or res.get("store_hash")
    if stored and stored != store_hash:  # a 16-character prefix collision: never reuse another store's result
        return None
    return res


def run_plan(plan: Plan, results_dir: str | Path, progress: Callable[[dict], None] | None = None, *,
             rank: int = 0, world: int = 1, device: str | None = None, refs: list[CheckpointRef] | None = None,
             live: bool = False, write_table: bool = True) -> list[dict]:
    """Evaluate the plan into `results_dir`; returns the rows of the whole table (this run's and earlier).

    `progress(row)` is called for every finished row. `rank`/`world` split the checkpoints between
    processes (i % world == rank); `device` overrides the plan's; `refs` restricts the run to some
    checkpoints (watch mode). `live` shows a rich table while it runs. With `write_table`, the
    merged table (results.json, results.csv, plots) is rewritten at the end.
    """
    from vidcache.evaluate.report import LiveTable, write_results

    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    refs = resolve_checkpoints(plan) if refs is None else refs
    refs = refs[rank::world]
    dev_name = device or plan.run.devices[rank % len(plan.run.devices)]
    view = LiveTable(live)
    try:
        for ds in plan.datasets:
            _run_dataset(plan, ds, refs, results_dir, dev_name, lambda row: (view.add(row),
                                                                          progress and progress(row)))
    finally:
        view.close()
    if write_table:
        return write_results(results_dir)
    from vidcache.evaluate.report import collect_rows

    return collect_rows(results_dir)


def _run_dataset(plan: Plan, ds: DatasetSpec, refs: list[CheckpointRef], results_dir: Path, dev_name: str,
                 emit: Callable[[dict], Any]) -> None:
    import torch

    from vidcache.cache import manifest_digest
    from vidcache.data.manifest import read_manifest
    from vidcache.device import resolve_device
    from vidcache.distributed import DistInfo
    from vidcache.extract.clips import ClipExtractConfig, make_job, preprocess_key
    from vidcache.extract.runner import run_extractions

    device = resolve_device(dev_name, DistInfo())
    manifest = read_manifest(ds.manifest)
    mdigest = manifest_digest(manifest)
    ecfg = ClipExtractConfig(protocol=ds.protocol, tokens=ds.tokens, clip_len=ds.clip_len, stride=ds.stride,
                             crop_fraction=ds.crop_fraction, dtype=ds.dtype, batch_size=plan.run.batch_size,
                             workers=plan.run.workers, device=str(device), decode_timeout=plan.run.decode_timeout)
    probes = []
    for p in plan.probes:
        cfg = plan.probe_config(p, ds)
        if not isinstance(cfg, dict):
            cfg = dataclasses.replace(cfg, device=str(device))
        else:
            cfg = {k: dataclasses.replace(v, device=str(device)) if hasattr(v, "device") else v
                   for k, v in cfg.items()}
        probes.append((p, cfg, probe_hash(p, cfg)))

    cache = IdentityCache(results_dir / "index")
    ekey = config_hash({"extract": hashed_dict(ecfg), "manifest": mdigest})

    def missing(u: _Unit) -> bool:
        return any(_cached_result(probe_dir(results_dir, u.store_hash, p, h), u.store_hash) is None
                   for p, _, h in probes)

    n = plan.run.max_models_per_pass
    for start in range(0, len(refs), n):
        units = []
        for ref in refs[start:start + n]:
            unit = _Unit(ref, (None, "", ""))
            units.append(unit)
            try:
                key = identity(ref)
            except OSError as e:
                unit.error = f"cannot read {ref.label}: {e}"
                continue
            info = cache.get(key)
            if "format" not in info or "pretrain_flops" not in info:  # new, or cached before FLOPs were read
                info = inspect(ref)
                cache.update(key, **info)
            unit.step = tuple(info["step"])
            unit.pretrain_flops = info["pretrain_flops"]
            known = info.get("stores", {}).get(ekey)
            if known:
                unit.store_hash, unit.weights = known["store_hash"], known["weights"]
                unit.store_url = str(store_path(results_dir, ds.name, unit.store_hash, mdigest))
                if not missing(unit) or _store_complete(Path(unit.store_url)):
                    continue  # everything this checkpoint needs exists: no need to build the model
            try:
                bb = load_backbone(ref, info["format"]).to(device).eval()
                job = make_job(dataclasses.replace(ecfg, backbone=bb.name, backbone_options=dict(ref.options)),
                               bb, device, manifest)
                unit.backbone, unit.job = bb, job
                unit.store_hash = config_hash(job.store_config())
                unit.weights = bb.weights_digest()
                unit.store_url = str(store_path(results_dir, ds.name, unit.store_hash, mdigest))
                cache.update(key, stores={ekey: {"store_hash": unit.store_hash, "weights": unit.weights}})
            except VidcacheError as e:
                unit.error = str(e)

        # Extract, in shared decode passes, the stores some probe still needs.
        todo = [u for u in units if u.job is not None and not u.error and not _store_complete(Path(u.store_url))
                and missing(u)]
        groups: dict[tuple, list[_Unit]] = {}
        for u in todo:
            groups.setdefault(preprocess_key(u.job), []).append(u)
        for group in groups.values():
            t0 = time.perf_counter()
            try:
                run_extractions([u.job for u in group], manifest, [u.store_url for u in group],
                                workers=plan.run.workers, timeout_s=plan.run.decode_timeout, dist=DistInfo(),
                                videos_per_block=group[0].job.suggested_block())
            except VidcacheError as e:
                for u in group:
                    u.error = f"extraction failed: {e}"
            for u in group:
                u.extract_s = time.perf_counter() - t0
        for u in units:  # the models are not needed by the probes: free them before probing
            u.backbone = u.job = None
        if device.type == "cuda":
            torch.cuda.empty_cache()

        for u in units:
            if not u.error:
                _drop_error_rows(results_dir, u.ref.label, ds.name)
            facts = {} if u.error else _store_facts(Path(u.store_url))
            for p, cfg, h in probes:
                base = _base_row(u, ds, p, h)
                if u.error:
                    rows = _error_rows(base, p, u.error)
                else:
                    out = probe_dir(results_dir, u.store_hash, p, h)
                    res = _cached_result(out, u.store_hash)
                    cached, t0 = res is not None, time.perf_counter()
                    try:
                        if res is None:
                            res = _run_probe(p, cfg, u.store_url, out)
                        rows = _rows_from_result(base, p, res, cached, time.perf_counter() - t0,
                                                 facts.get("flops_per_clip"))
                    except VidcacheError as e:
                        rows = _error_rows(base, p, f"{p.name}: {e}")
                for row in rows:
                    _write_row(results_dir, row)
                    emit(row)


def run_plan_multi_gpu(plan: Plan, results_dir: str | Path, devices: list[str] | None = None) -> list[dict]:
    """One process per device, each taking checkpoints i % world == rank; then one merged table.

    With a single device (or on a CPU) this is `run_plan` in this process.
    """
    from vidcache.evaluate.report import write_results

    devices = devices or plan.run.devices
    if len(devices) <= 1:
        return run_plan(plan, results_dir, device=devices[0] if devices else None)
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # CUDA cannot be used in forked children
    procs = [ctx.Process(target=_worker, args=(plan, str(results_dir), r, len(devices), d, os.getpid()),
                         daemon=False) for r, d in enumerate(devices)]
    for p in procs:
        p.start()
    failed = []
    for r, p in enumerate(procs):
        p.join()
        if p.exitcode != 0:
            failed.append(f"{devices[r]} (exit code {p.exitcode})")
    rows = write_results(results_dir)
    if failed:
        raise VidcacheError(f"evaluation processes failed on {', '.join(failed)}; the table holds the "
                            "finished rows, rerun the same command to resume")
    return rows


def _worker(plan: Plan, results_dir: str, rank: int, world: int, device: str, parent_pid: int) -> None:
    from vidcache.procs import die_with_parent

    die_with_parent(parent_pid)  # a killed `eval run` must not leave its device processes running
    run_plan(plan, results_dir, rank=rank, world=world, device=device, write_table=False)


def run_plan_distributed(plan: Plan, results_dir: str | Path) -> list[dict]:
    """Under torchrun: this rank takes checkpoints i % WORLD_SIZE == RANK on its local GPU.

    Every rank merges the table when it finishes (under a file lock), so the last one to finish
    writes the complete table.
    """
    from vidcache.distributed import DistInfo

    dist = DistInfo.from_env()
    dev = plan.run.devices[0]
    if dev in ("auto", "cuda"):
        import torch

        dev = f"cuda:{dist.local_rank % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu"
    return run_plan(plan, results_dir, rank=dist.rank, world=dist.world, device=dev)
