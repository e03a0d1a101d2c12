"""`run_probe`: load the splits, fit a probe, report val and test, save results and weights.

The CLI (`vidcache probe linear|attentive|knn|mlp STORE -o OUT`) and batch re-evaluation call this.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from vidcache.config import check, from_dict
from vidcache.errors import ConfigError, DataError
from vidcache.probe.attentive import AttentiveProbe
from vidcache.probe.data import ProbeData, load_split, split_off, subsample
from vidcache.probe.knn import KNNProbe
from vidcache.probe.linear import LinearProbe
from vidcache.probe.mlp import MLPProbe

log = logging.getLogger(__name__)

PROBES: dict[str, type] = {"linear": LinearProbe, "attentive": AttentiveProbe, "knn": KNNProbe, "mlp": MLPProbe}


def probe_class(name: str) -> type:
    if name not in PROBES:
        raise ConfigError([f"unknown probe {name!r}; choose one of {', '.join(PROBES)}"], "probe")
    return PROBES[name]


def make_config(name: str, **overrides) -> Any:
    """The probe's config with the given fields changed (unknown fields and bad values reported together)."""
    cls = probe_class(name).Config
    return from_dict(cls, {**dataclasses.asdict(cls()), **overrides}, f"{name} probe config")


def _splits(store_or_data: Any, probe: type, cfg, allow_mismatch: bool = False) -> tuple[dict[str, ProbeData], dict]:
    """{"train", "val", "test"?} as ProbeData, plus store facts for results.json."""
    meta: dict = {}
    if isinstance(store_or_data, dict) and any(not isinstance(v, ProbeData) for v in store_or_data.values()
                                               if v is not None):
        data, meta = _splits_from_stores(store_or_data, probe, cfg, allow_mismatch)
    elif isinstance(store_or_data, dict):
        data = {k: v for k, v in store_or_data.items() if v is not None}
        if cfg.train_split not in data and "train" in data:
            data[cfg.train_split] = data["train"]
    else:
        store = store_or_data
        if isinstance(store, (str, Path)):
            from vidcache.cache.store import Store

            store = Store.open(store, kind="clips")
        meta = {"store": getattr(store, "url", ""), "config_hash": getattr(store, "config_hash", "")}
        names = [cfg.train_split, cfg.val_split] + ([cfg.test_split] if cfg.test_split else [])
        present = set(store.splits().tolist()) if hasattr(store, "splits") else None
        arrays = feature_arrays(store, probe, cfg)
        data = {}
        for s in names:
            if present is not None and s not in present and s == cfg.val_split and cfg.val_fraction > 0:
                continue
            data[s] = load_split(store, s, arrays, key=arrays[0], positions=_positions(cfg))
        meta["classes"] = list(getattr(store, "classes", []) or [])
        if getattr(cfg, "train_store", ""):
            data[cfg.train_split], meta["train_store"] = _train_from(cfg.train_store, store, probe, cfg)
            if cfg.val_split not in data:
                raise DataError(f"--train-store trains on {cfg.train_store}; {meta['store']} must then hold the "
                                f"{cfg.val_split!r} split that selects hyper-parameters")
    out = {"train": data.get(cfg.train_split), "val": data.get(cfg.val_split),
           "test": data.get(cfg.test_split) if cfg.test_split else None}
    if out["train"] is None:
        raise DataError(f"no {cfg.train_split!r} split given; the probe needs one to train on")
    if out["val"] is None:
        if cfg.val_fraction <= 0:
            raise DataError(f"no {cfg.val_split!r} split: hyper-parameters are chosen on val, never on test; "
                            f"name one with --val-split or hold out part of train with --val-fraction 0.1")
        out["train"], out["val"] = split_off(out["train"], cfg.val_fraction, cfg.seed)
        meta["val_from_train"] = cfg.val_fraction
    for name, d in out.items():
        if d is not None and not d.split:
            d.split = name
    return out, meta


def _train_from(url: str, store: Any, probe: type, cfg) -> tuple[ProbeData, dict]:
    """The train split of another clip store (e.g. cached augmented views), checked to be the same
    videos through the same backbone as `store`."""
    from vidcache.cache.store import Store

    other = Store.open(url, kind="clips")
    problems = []
    if other.attrs.get("manifest_digest") != store.attrs.get("manifest_digest"):
        problems.append("another manifest")
    a, b = (other.config.get("backbone") or {}), (store.config.get("backbone") or {})
    if a.get("weights") != b.get("weights") or a.get("name") != b.get("name"):
        problems.append(f"another backbone ({a.get('name')} vs {b.get('name')})")
    if problems:
        raise DataError(f"--train-store {url} was extracted from {' and '.join(problems)} than {store.url}; "
                        f"extract both from one manifest with one backbone")
    arrays = feature_arrays(other, probe, cfg)
    return (load_split(other, cfg.train_split, arrays, key=arrays[0], positions=_positions(cfg)),
            {"url": other.url, "config_hash": other.config_hash, "protocol": other.attrs.get("protocol")})


def _positions(cfg) -> bool:
    """Whether the probe needs every token's frame number (the attentive probe's `pos_embed`)."""
    return bool(getattr(cfg, "pos_embed", False))


def feature_arrays(store: Any, probe: type, cfg) -> tuple[str, ...]:
    """The store arrays the probe reads, with `emb` replaced by the array of `cfg.feature`; a feature
    the store lacks is refused naming the ones it has."""
    from vidcache.models.features import feature_key

    name = getattr(cfg, "feature", "mean")
    if "emb" not in probe.arrays:
        if name != "mean":
            raise ConfigError([f"the {probe.name} probe reads {', '.join(probe.arrays)}, not a pooled feature; "
                               f"drop --feature {name}"], f"{probe.name} probe")
        return tuple(probe.arrays)
    have = list(getattr(store, "features", None) or ["mean"])
    if name not in have:
        raise DataError(f"{getattr(store, 'url', 'the store')} has no feature {name!r}; it has: {', '.join(have)} "
                        f"(extract with --features {name} on a backbone with a CLS token)")
    return tuple(feature_key(name) if a == "emb" else a for a in probe.arrays)


def _splits_from_stores(stores: dict, probe: type, cfg, allow_mismatch: bool) -> tuple[dict[str, ProbeData], dict]:
    """{"train": store, "val": store?, "test": store?}: each role's split read from its own store.

    Without a val store, val comes from the train store when it has that split. The stores must
    hold one dataset's classes and features of one extraction (`vidcache.cache.compat`), unless
    `allow_mismatch`.
    """
    from vidcache.cache.compat import check_compatible
    from vidcache.cache.store import Store

    if stores.get("train") is None:
        raise DataError("no 'train' store given; the probe needs one to train on")
    opened = {role: Store.open(str(st), kind="clips") if isinstance(st, (str, Path)) else st
              for role, st in stores.items() if st is not None}
    train = opened["train"]
    for role, st in opened.items():
        if role != "train" and st is not train:
            check_compatible(train, st, "train store", f"{role} store", allow=allow_mismatch)
    names = {"train": cfg.train_split, "val": cfg.val_split, "test": cfg.test_split}
    if "val" not in opened and cfg.val_split in set(train.splits().tolist()):
        opened["val"] = train
    arrays = feature_arrays(train, probe, cfg)
    data = {names[role]: load_split(st, names[role], arrays, key=arrays[0], positions=_positions(cfg))
            for role, st in opened.items() if names.get(role)}
    meta = {"store": {role: getattr(st, "url", "") for role, st in opened.items()},
            "config_hash": getattr(train, "config_hash", ""), "classes": list(getattr(train, "classes", []) or [])}
    return data, meta


def _num_classes(data: dict[str, ProbeData], classes: list[str]) -> int:
    seen = max(int(d.y.max()) for d in data.values() if d is not None and len(d)) + 1
    return max(len(classes), seen)


def run_probe(name: str, store_or_data: Any, out_dir: str | Path | None, cfg: Any = None,
              progress: Any = None, info: dict | None = None, allow_mismatch: bool = False) -> dict:
    """Fit probe `name` on train, select on val, report on test; write results and weights to out_dir.

    `store_or_data`: a clip store (path or opened `Store`), a dict {"train", "val", "test"} of
    ProbeData, or such a dict of stores (each role's split read from its store; stores of different
    classes or extractions are refused unless `allow_mismatch`). `progress`: a rich Progress to
    advance, True for a fresh one, or None. With
    `cfg.shots` / `cfg.fraction` the fit is repeated over `cfg.repeats` seeds on class-balanced
    subsets of train and test metrics are reported as mean and std. `info` is recorded in
    results.json as given (e.g. the preset). Returns the results dict.
    """
    t0 = time.perf_counter()
    cls = probe_class(name)
    cfg = check(cfg if cfg is not None else cls.Config())
    data, meta = _splits(store_or_data, cls, cfg, allow_mismatch)
    load_s = time.perf_counter() - t0
    warnings: list[str] = []
    classes = meta.get("classes") or data["train"].classes
    k = _num_classes(data, classes)
    train_classes = set(np.unique(data["train"].y).tolist())
    for split in ("val", "test"):
        d = data[split]
        if d is not None:
            missing = sorted(set(np.unique(d.y).tolist()) - train_classes)
            if missing:
                names = [classes[c] if c < len(classes) else str(c) for c in missing[:10]]
                msg = (f"{len(missing)} classes of {split!r} have no training video and can never be "
                       f"predicted: {', '.join(names)}{' ...' if len(missing) > 10 else ''}")
                log.warning(msg)
                warnings.append(msg)
    skipped = {s: d.skipped for s, d in data.items() if d is not None and d.skipped}

    own_progress = progress is True
    if own_progress:
        from rich.progress import Progress

        progress = Progress()
        progress.start()
    seeds = [cfg.seed + r for r in range(cfg.repeats)] if cfg.lowshot else [cfg.seed]
    runs, probe = [], None
    try:
        for seed in seeds:
            rcfg = dataclasses.replace(cfg, seed=seed)
            train = subsample(data["train"], cfg.shots or None, cfg.fraction or None, seed) if cfg.lowshot \
                else data["train"]
            task = None
            if progress is not None:
                task = progress.add_task(f"{name} probe" + (f" seed {seed}" if cfg.lowshot else ""), total=None)

            def on_step(done: int, total: int, task=task):
                if progress is not None:
                    progress.update(task, completed=done, total=total)

            p = cls(rcfg, num_classes=k).fit(train, data["val"], on_step)
            if data["test"] is not None:
                p.evaluate(data["test"], "test")
            runs.append({"seed": seed, "num_train": len(train), "selected": p.selected(),
                         "fit_s": p.info.get("fit_seconds"),
                         "val": _short(p.metrics["val"]), "test": _short(p.metrics.get("test", {}))})
            probe = probe or p
    finally:
        if own_progress:
            progress.stop()

    extra = {**meta, **(info or {}), "feature": getattr(cfg, "feature", "mean"), "skipped": skipped,
             "warnings": warnings + list((info or {}).get("warnings", [])),
             "timings": {"load_s": load_s, "total_s": time.perf_counter() - t0,
                         "fit_s": [r.get("fit_s") for r in runs]}}
    if classes:
        extra["classes"] = classes
    if cfg.lowshot:
        extra["runs"] = runs
        extra["lowshot"] = {"shots": cfg.shots, "fraction": cfg.fraction, "repeats": cfg.repeats}
        for split in ("val", "test"):
            vals = [r[split] for r in runs if r[split]]
            if vals:
                keys = vals[0].keys()
                extra[split] = {m: float(np.mean([v[m] for v in vals])) for m in keys}
                extra[f"{split}_std"] = {m: float(np.std([v[m] for v in vals])) for m in keys}
    extra.update(reported(cfg.report, {**probe.results(), **extra}))
    res = {**probe.results(), **extra}
    if out_dir is not None:
        probe.save(out_dir, extra)
    return res


def run_preset(preset_name: str, name: str, store: Any, out_dir: str | Path | None, overrides: dict | None = None,
               progress: Any = None) -> dict:
    """Probe `name` with a preset's values (vidcache/presets.py) under `overrides`.

    A preset that reads several features (dinov2-linear: cls, cls+avgpool, last4, last4+avgpool)
    runs once per feature the store holds, into OUT/<feature>/, and OUT/results.json is the run
    with the best val top-1: DINOv2 picks its best classifier over all of them the same way.
    """
    from vidcache.presets import get_preset

    preset = get_preset(preset_name)
    overrides = dict(overrides or {})
    if preset.probe != name:
        raise ConfigError([f"preset {preset.name} configures the {preset.probe} probe; run "
                           f"`vidcache probe {preset.probe} STORE --preset {preset.name}`"], "preset")
    if isinstance(store, (str, Path)):
        from vidcache.cache.store import Store

        store = Store.open(store, kind="clips")
    have = list(getattr(store, "features", None) or ["mean"])
    if "feature" in overrides:
        features = [overrides.pop("feature")]
    elif preset.features:
        features = [f for f in preset.features if f in have]
        if not features:
            raise DataError(f"preset {preset.name} reads the feature{'s' if len(preset.features) > 1 else ''} "
                            f"{', '.join(preset.features)} but {getattr(store, 'url', 'the store')} has only "
                            f"{', '.join(have)}; extract it with `vidcache extract clips --preset {preset.name}` "
                            f"on a backbone with a CLS token")
    else:
        features = ["mean"]
    warnings = []
    attrs = getattr(store, "attrs", {}) or {}
    want = preset.extract.get("protocol")
    if want and attrs.get("protocol") and attrs["protocol"] != want:
        warnings.append(f"store protocol {attrs['protocol']} is not the preset's {want}: the number is not "
                        f"the protocol of record")
    info = {"preset": preset.name, "preset_sources": list(preset.sources), "warnings": warnings}
    for w in warnings:
        log.warning(w)
    runs = {}
    for f in features:
        cfg = make_config(name, **{**preset.probe_config, "feature": f, **overrides})
        sub = None if out_dir is None else (Path(out_dir) / f if len(features) > 1 else Path(out_dir))
        runs[f] = run_probe(name, store, sub, cfg, progress, info)
    best = max(features, key=lambda f: ((runs[f].get("val") or {}).get("top1", float("-inf")), -features.index(f)))
    res = dict(runs[best])
    if len(features) > 1:
        res["by_feature"] = {f: {"val": _short(r.get("val") or {}), "reported": r.get("reported")}
                             for f, r in runs.items()}
        if out_dir is not None:
            from vidcache.config import save_json

            save_json(res, Path(out_dir) / "results.json")
    return res


def reported(report: str, res: dict) -> dict:
    """The number a run stands for, with its protocol: {"report", "reported": {"split", "selection",
    "top1", ...}}.

    `test`: the head (or k) selected on val, scored once on test. `best-val`: the best val score over
    the grid, which is what V-JEPA 2 (evals/video_classification_frozen/eval.py: the max over its
    heads' val accuracy) and DINOv2 (dinov2/eval/linear.py: the best classifier on the evaluation
    set) report; there the evaluation split is the one given as val.
    """
    split = "test" if report == "test" else "val"
    m = res.get(split) or {}
    out = {"split": split, "selection": "val" if report == "test" else "best on the same split",
           **_short(m)}
    if f"{split}_std" in res:
        out["std"] = _short(res[f"{split}_std"])
    return {"report": report, "reported": out}


def _short(m: dict) -> dict:
    return {k: v for k, v in m.items() if k in ("top1", "top5", "mean_class_acc")}
