"""What every probe shares, and the grid-trained probes (linear, MLP, attentive) on top of it.

`Probe` is the base of every probe (kNN included): the config, the fit-time checks (non-empty,
finite, labels within the classes), `evaluate`, the results object and `results.json` /
`config.json`. `GridProbe` adds training: a subclass names its config class, the store arrays it
reads, how it prepares a split (e.g. mean over views) and how it builds one head; `GridProbe` does
the rest through `train_grid`.
"""

from __future__ import annotations

import abc
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from vidcache.config import check, from_dict, save_json, to_dict
from vidcache.device import resolve_device
from vidcache.errors import DataError
from vidcache.probe.data import ProbeData, check_finite, check_nonempty
from vidcache.probe.metrics import classification_metrics
from vidcache.probe.config import ProbeConfig
from vidcache.probe.train import GridResult, Standardizer, TrainConfig, grid_scores, train_grid

WEIGHTS = "head.safetensors"
NORM = "norm.safetensors"


def as_probe_data(x: Any, y: np.ndarray | None = None) -> ProbeData:
    if isinstance(x, ProbeData):
        return x
    x = np.asarray(x)
    return ProbeData(x=x, y=np.zeros(len(x), dtype=np.int64) if y is None else y)


def check_labels(data: ProbeData, num_classes: int) -> None:
    if len(data) and (data.y.max() >= num_classes or data.y.min() < 0):
        raise DataError(f"split {data.split!r} has label {int(data.y.max())} but the probe has "
                        f"{num_classes} classes; the store's class list and labels disagree")


def evaluate_probe(probe, data: ProbeData, name: str | None) -> dict:
    """Metrics of `probe.predict` on a split, recorded in `probe.metrics[name]`: every probe's evaluate."""
    check_nonempty(data, data.split or name or "data")
    check_labels(data, probe.num_classes)
    t0 = time.perf_counter()
    m = classification_metrics(probe.predict(data), data.y)
    m["seconds"] = time.perf_counter() - t0
    if name:
        probe.metrics[name] = m
    return m


class Probe(abc.ABC):
    """fit(train, val) -> self, predict(x) -> probabilities, evaluate, results, save (DESIGN.md §5)."""

    name = "probe"
    Config: type = ProbeConfig
    arrays: tuple[str, ...] = ("emb",)  # store arrays this probe reads; the first is `x`

    def __init__(self, cfg: ProbeConfig | None = None, num_classes: int | None = None):
        self.cfg = check(cfg if cfg is not None else self.Config())
        self.num_classes = num_classes
        self.dim: int | None = None
        self.metrics: dict[str, dict] = {}
        self.info: dict[str, Any] = {}

    # ------------------------------------------------------------------ per-probe hooks
    def prepare(self, data: ProbeData) -> ProbeData:
        """The split as the probe consumes it (e.g. mean over views); identity by default."""
        return data

    @abc.abstractmethod
    def fit(self, train: ProbeData, val: ProbeData, on_step: Callable[[int, int], None] | None = None) -> "Probe":
        """Fit on train, select hyper-parameters on val (starting with `check_fit`)."""

    @abc.abstractmethod
    def predict(self, x: ProbeData | np.ndarray) -> np.ndarray:
        """Probabilities [n, K] of the selected hyper-parameters (inputs through `inputs`)."""

    @abc.abstractmethod
    def selected(self) -> dict:
        """The hyper-parameters selected on val."""

    @abc.abstractmethod
    def grid_table(self) -> list[dict]:
        """One row per hyper-parameter setting tried, with its val metrics."""

    # ------------------------------------------------------------------ shared checks
    def check_fit(self, train: ProbeData, val: ProbeData) -> tuple[ProbeData, ProbeData]:
        """The checks every fit starts with: both splits non-empty and finite, labels within the
        classes (inferred from the labels when not given). Returns the prepared splits and records
        `dim` and `info["num_train"]`."""
        for d, name in ((train, train.split or "train"), (val, val.split or "val")):
            check_nonempty(d, name)
            check_finite(d)
        raw_val = val  # evaluate() prepares its input itself: it gets the split as given
        train, val = self.prepare(train), self.prepare(val)
        if self.num_classes is None:
            self.num_classes = int(max(train.y.max(), val.y.max())) + 1
        check_labels(train, self.num_classes)
        check_labels(val, self.num_classes)
        self.dim = train.dim
        self.info["num_train"] = len(train)
        return train, val

    def inputs(self, x: ProbeData | np.ndarray) -> ProbeData:
        """What `predict` scores: `x` as ProbeData, checked finite, prepared."""
        data = as_probe_data(x)
        check_finite(data)
        return self.prepare(data)

    def evaluate(self, data: ProbeData, name: str | None = "test") -> dict:
        """Metrics of the selected probe on a split (recorded under `name` for results.json)."""
        return evaluate_probe(self, data, name)

    # ------------------------------------------------------------------ results
    def results(self) -> dict:
        return {"probe": self.name, "num_classes": self.num_classes, "dim": self.dim,
                "selected": self.selected(), "grid": self.grid_table(), "seed": self.cfg.seed,
                **{k: v for k, v in self.metrics.items()}, **self.info}

    def save(self, out_dir: str | Path, extra: dict | None = None) -> Path:
        """config.json and results.json (`extra`: run facts such as the store, `report`, timings)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_json(self.cfg, out / "config.json")
        save_json({**self.results(), **(extra or {})}, out / "results.json")
        return out

    def config_dict(self) -> dict:
        return to_dict(self.cfg)


class GridProbe(Probe):
    """A probe trained as a grid of heads over lr x wd, selected on val; subclasses give the head."""

    name = "grid"
    Config: type = TrainConfig

    def __init__(self, cfg: TrainConfig | None = None, num_classes: int | None = None):
        super().__init__(cfg, num_classes)
        self.result: GridResult | None = None
        self._loaded: dict | None = None  # state of a probe read back by `load`

    @abc.abstractmethod
    def make_head(self, dim: int, num_classes: int) -> nn.Module:
        """A fresh head for `dim`-wide inputs and `num_classes` outputs (called once per grid entry)."""

    # ------------------------------------------------------------------ fit / predict
    def fit(self, train: ProbeData, val: ProbeData, on_step: Callable[[int, int], None] | None = None):
        raw_val = val  # evaluate() prepares its input itself: it gets the split as given
        train, val = self.check_fit(train, val)
        dim, k = self.dim, self.num_classes
        self.result = train_grid(lambda: self.make_head(dim, k), self.cfg.grid(), train, val, self.cfg, on_step)
        self.info["fit_seconds"] = self.result.seconds
        # training samples: every (regrouped) view with sample=clip/segments, one per video with video
        self.info["train_samples"] = len(train) * (train.num_views if getattr(self.cfg, "sample", "clip") != "video"
                                                   else 1)
        self.metrics["val"] = self.evaluate(raw_val, None)
        return self


    def predict(self, x: ProbeData | np.ndarray) -> np.ndarray:
        """Probabilities [n, K] of the selected head, averaged over each video's views."""
        data = self.inputs(x)
        device = resolve_device(self.cfg.device)
        if self.result is not None:
            return self.result.scores(data, [self.result.best], device, self.cfg.eval_batch_size)[0]
        if self._loaded is None:
            raise RuntimeError("predict() before fit() or load()")
        head, params, buffers, norm = (self._loaded[k] for k in ("head", "params", "buffers", "norm"))
        head = head.to(device)
        return grid_scores(head, {k: v.to(device) for k, v in params.items()},
                           {k: v.to(device) for k, v in buffers.items()}, data, norm, self.cfg.sample,
                           device, self.cfg.eval_batch_size)[0].numpy()

    # ------------------------------------------------------------------ results and weights
    def selected(self) -> dict:
        r = self.result
        return {**r.grid[r.best], "index": r.best} if r is not None else dict(self._loaded["selected"])

    def grid_table(self) -> list[dict]:
        r = self.result
        if r is None:
            return []
        return [{**g, **{f"val_{k}": v for k, v in r.val[i].items()}, "train_loss": r.train_loss[i]}
                for i, g in enumerate(r.grid)]

    def save(self, out_dir: str | Path, extra: dict | None = None) -> Path:
        """results.json, config.json, head.safetensors (the selected head) and norm.safetensors."""
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if self.result is None:
            raise RuntimeError("save() before fit()")
        save_file({k: v.contiguous() for k, v in self.result.state_dict().items()}, str(out / WEIGHTS))
        norm = self.result.norm
        save_file({"mean": torch.from_numpy(norm.mean), "std": torch.from_numpy(norm.std)}, str(out / NORM))
        return super().save(out, extra)

    @classmethod
    def load(cls, out_dir: str | Path) -> "GridProbe":
        """A fitted probe read back from `save` (predict / evaluate only)."""
        from safetensors.torch import load_file

        out = Path(out_dir)
        try:
            cfg = from_dict(cls.Config, json.loads((out / "config.json").read_text()))
            res = json.loads((out / "results.json").read_text())
            state = load_file(str(out / WEIGHTS))
            ns = load_file(str(out / NORM))
        except FileNotFoundError as e:
            raise DataError(f"{out} is not a saved {cls.name} probe ({e.filename} missing)") from None
        probe = cls(cfg, num_classes=int(res["num_classes"]))
        probe.dim = int(res["dim"])
        head = probe.make_head(probe.dim, probe.num_classes)
        head.load_state_dict(state, strict=True)
        names = dict(head.named_parameters())
        probe._loaded = {
            "head": head, "selected": res.get("selected", {}),
            "params": {k: v[None] for k, v in state.items() if k in names},
            "buffers": {k: v[None] for k, v in state.items() if k not in names},
            "norm": Standardizer(ns["mean"].numpy(), ns["std"].numpy()),
        }
        probe.metrics = {k: res[k] for k in ("val", "test") if k in res}
        return probe
