"""Evaluating a SCALE run with the probes: one table of baselines and SCALE variants.

Rows (thesis ch. 4.3.1), with the features of the official code (Separius/SCALE `src/eval.py`:
`LinearOnTop` with the set token appended, `knn`) for a run of the official form. x_i is the clip
feature the predictor reads (the stored embedding, standardised with SCALE's training statistics
when `standardize` is on), SET the CLS output of the set of all the video's clips:
    Linear        linear head per clip of the frozen embeddings, softmax averaged over clips
    MLP           the same with an MLP head (the nonlinear baseline)
    kNN           k = 20 DINO-weighted vote on mean_i x_i, centred with the train mean, l2-normalised
    Transformer   SCALE's predictor architecture + linear head on [x_i ⊕ SET], trained on labels
                  from random init (differs from SCALE_ft only in the initialisation)
    SCALE_linear  linear head on [x_i ⊕ SET] per clip, softmax averaged over clips
    SCALE_kNN     k = 20 vote on mean_i [x_i ⊕ SET], centred with the train mean, l2-normalised
    SCALE_ft      the pretrained predictor + linear head on [x_i ⊕ SET], fine-tuned (backbone frozen)
The official code centres each split with its own mean; here every split is centred with the train
mean, so no test statistics are used. A thesis-form run keeps the thesis' reading: [Ĉ_i ⊕ CLS] for
the linear rows, the CLS token for SCALE_kNN and the mean of l2-normalised clips for kNN.

Every row goes through the probes' machinery (`vidcache.probe`): grid over lr x wd, selection on
val, report on test. The frozen-feature rows are plain probes on features derived here; the two
transformer rows are `GridProbe`s whose head is the predictor, trained by `train_grid` on whole
videos (`sample="video"`) with the clip boxes travelling as an extra per-view array.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vidcache.config import check, field, save_json, to_dict
from vidcache.device import resolve_device
from vidcache.errors import DataError
from vidcache.probe.base import GridProbe
from vidcache.probe.data import ProbeData, check_nonempty, load_split, split_off
from vidcache.probe.knn import KNNConfig, KNNProbe
from vidcache.probe.linear import LinearConfig, LinearProbe
from vidcache.probe.mlp import MLPConfig, MLPProbe
from vidcache.probe.train import TrainConfig
from vidcache.scale.config import ROWS, ScaleEvalConfig  # noqa: F401  (re-exported)
from vidcache.scale.model import SCALEPredictor
from vidcache.scale.train import load_run

log = logging.getLogger(__name__)

TITLES = {"linear": "Linear", "mlp": "MLP", "knn": "kNN", "transformer": "Transformer",
          "scale_linear": "SCALE_linear", "scale_knn": "SCALE_kNN", "scale_ft": "SCALE_ft"}


# ---------------------------------------------------------------------------------------------
# The predictor as a classification head (Transformer and SCALE_ft rows)


FEATURES = {"official": "x_set", "thesis": "clips_cls"}


class SetClassifier(nn.Module):
    """Predictor + linear head per clip; returns log of the mean clip softmax.

    The head reads [x_i ⊕ SET] (`features="x_set"`, the official `LinearOnTop`) or [Ĉ_i ⊕ CLS]
    (`"clips_cls"`, the thesis form). Returning log(mean_i softmax_i) makes the probes'
    cross-entropy the loss of the averaged prediction, and their softmax of it the same average
    SCALE_linear reports.
    """

    def __init__(self, predictor: SCALEPredictor, num_classes: int, features: str = "x_set"):
        super().__init__()
        self.predictor = predictor
        self.features = features
        # The MSK token is never used on labels; a parameter without gradient would break the
        # grid's autograd.grad over every parameter.
        self.predictor.mask_token = None
        width = (predictor.in_dim if features == "x_set" else predictor.hidden_dim) + predictor.hidden_dim
        self.fc = nn.Linear(width, num_classes)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, batch: dict) -> torch.Tensor:
        clips, cls = self.predictor(batch["x"], batch["box"])
        first = self.predictor.normalize(batch["x"]) if self.features == "x_set" else clips
        feats = torch.cat([first, cls[:, None].expand(-1, first.shape[1], -1)], dim=-1)
        logp = F.log_softmax(self.fc(feats), dim=-1)
        return torch.logsumexp(logp, dim=1) - np.log(logp.shape[1])


@dataclass
class SetProbeConfig(TrainConfig):
    """Grid training of the predictor on whole videos; the predictor standardises its own inputs."""

    sample: str = field("video", help="the head sees all clips of a video")
    standardize: bool = field(False, help="off: the predictor applies the SCALE training statistics")

    def validate(self) -> list[str]:
        p = super().validate()
        if self.sample != "video":
            p.append("the set probes see whole videos: sample must be video")
        return p


class SetProbe(GridProbe):
    """`GridProbe` whose head is SetClassifier over a predictor built by `make_predictor`."""

    name = "set_transformer"
    Config = SetProbeConfig
    arrays = ("emb",)

    def __init__(self, cfg: SetProbeConfig, num_classes: int | None, make_predictor, features: str = "x_set"):
        super().__init__(cfg, num_classes)
        self.make_predictor = make_predictor
        self.features = features

    def make_head(self, dim: int, num_classes: int) -> nn.Module:
        return SetClassifier(self.make_predictor(), num_classes, self.features)


# ---------------------------------------------------------------------------------------------
# Features


@torch.no_grad()
def scale_features(predictor: SCALEPredictor, emb: np.ndarray, box: np.ndarray, device: str | torch.device = "cpu",
                   batch_size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predictor outputs of every video with all its clips, none masked:
    (x [n, C, D] the clip features it reads, clips [n, C, H], cls [n, H])."""
    predictor = predictor.to(device).eval()
    xs, clips, cls = [], [], []
    for s in range(0, len(emb), batch_size):
        e = torch.from_numpy(np.ascontiguousarray(emb[s:s + batch_size])).to(device)
        b = torch.from_numpy(np.ascontiguousarray(box[s:s + batch_size], dtype=np.float32)).to(device)
        c, t = predictor(e, b)
        xs.append(predictor.normalize(e).cpu().numpy())
        clips.append(c.cpu().numpy())
        cls.append(t.cpu().numpy())
    H, D = predictor.hidden_dim, predictor.in_dim
    if not clips:
        return (np.zeros((0, emb.shape[1], D), np.float32), np.zeros((0, emb.shape[1], H), np.float32),
                np.zeros((0, H), np.float32))
    return np.concatenate(xs), np.concatenate(clips), np.concatenate(cls)


def centred_normalised(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """The official kNN feature: minus the (train) mean, then l2-normalised per row."""
    x = np.asarray(x, np.float64) - mean
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def _derive(data: ProbeData, predictor: SCALEPredictor, device, form: str = "official") -> dict[str, ProbeData]:
    """The per-row views of one split: raw clips (+ boxes) and the features of the kNN, SCALE_linear and
    SCALE_kNN rows (official form: the kNN ones still to be centred, see `_centre_knn`)."""
    x, clips, cls = scale_features(predictor, data.x, data.extras["box"], device)
    base = dataclasses.replace(data, extras={})
    views = {"raw": base, "set": data}
    if form == "official":
        x_set = np.concatenate([x, np.repeat(cls[:, None], x.shape[1], 1)], -1)
        views["scale_linear"] = dataclasses.replace(base, x=x_set)
        views["knn"] = dataclasses.replace(base, x=x.mean(1, keepdims=True))
        views["scale_knn"] = dataclasses.replace(base, x=x_set.mean(1, keepdims=True))
    else:
        views["scale_linear"] = dataclasses.replace(
            base, x=np.concatenate([clips, np.repeat(cls[:, None], clips.shape[1], 1)], -1))
        views["knn"] = base
        views["scale_knn"] = dataclasses.replace(base, x=cls[:, None])
    return views


def _centre_knn(views: dict[str, dict[str, ProbeData]]) -> None:
    """Official form: centre the kNN and SCALE_kNN features with the train split's mean, l2-normalise."""
    for row in ("knn", "scale_knn"):
        mean = views["train"][row].x[:, 0].astype(np.float64).mean(0)
        for split in views.values():
            split[row] = dataclasses.replace(split[row], x=centred_normalised(split[row].x, mean))


# ---------------------------------------------------------------------------------------------
# Splits


def _open(store: Any):
    if isinstance(store, (str, Path)):
        from vidcache.cache.store import Store
        return Store.open(str(store), kind="clips")
    return store


def _has_split(store, split: str) -> bool:
    return split in set(store.splits().tolist())


def load_splits(train_store: Any, eval_store: Any, cfg: ScaleEvalConfig,
                allow_mismatch: bool = False) -> tuple[dict[str, ProbeData], dict]:
    """{"train", "val", "test"} ProbeData with boxes, and where each came from.

    Stores of different class lists or extractions (backbone, weights, preprocessing) are refused
    unless `allow_mismatch`; their sampling protocols may differ.
    """
    from vidcache.cache.compat import check_compatible

    tr, ev = _open(train_store), _open(eval_store)
    if hasattr(tr, "attrs") and hasattr(ev, "attrs"):
        check_compatible(tr, ev, "train store", "eval store", allow=allow_mismatch)
    where = {"train": f"{tr.url}:{cfg.train_split}", "test": f"{ev.url}:{cfg.test_split}"}
    train = load_split(tr, cfg.train_split, ("emb",), extras=("box",))
    test = load_split(ev, cfg.test_split, ("emb",), extras=("box",))
    val = None
    for st in (tr, ev):
        if _has_split(st, cfg.val_split):
            val = load_split(st, cfg.val_split, ("emb",), extras=("box",))
            where["val"] = f"{st.url}:{cfg.val_split}"
            break
    if val is None:
        if cfg.val_fraction <= 0:
            raise DataError(f"no {cfg.val_split!r} split in either store: hyper-parameters are chosen on val, "
                            f"never on test; pass --val-fraction 0.1 to hold out part of train")
        train, val = split_off(train, cfg.val_fraction, cfg.seed)
        where["val"] = f"{cfg.val_fraction:g} of train"
    train.split, val.split, test.split = "train", "val", "test"
    meta = {"where": where, "train_config_hash": tr.config_hash, "eval_config_hash": ev.config_hash,
            "classes": list(tr.classes or ev.classes)}
    return {"train": train, "val": val, "test": test}, meta


# ---------------------------------------------------------------------------------------------
# The table


def evaluate_features(predictor: SCALEPredictor, data: dict[str, ProbeData], cfg: ScaleEvalConfig,
                      out_dir: str | Path | None = None, num_classes: int | None = None,
                      progress=None, loss_form: str = "official") -> dict:
    """Every row of the table on given splits ({"train", "val", "test"}, each with extras["box"]),
    with the features of `loss_form`'s reading (see the module notes)."""
    check(cfg, "SCALE eval config")
    device = resolve_device(cfg.device)
    for name, d in data.items():
        check_nonempty(d, name)
        if "box" not in d.extras:
            raise DataError(f"split {name!r} has no clip boxes; SCALE needs clips/box from the store")
        if d.dim != predictor.in_dim:
            raise DataError(f"split {name!r} has {d.dim}-d embeddings but the SCALE run was trained on "
                            f"{predictor.in_dim}-d ones; evaluate with stores of the same backbone")
    k = num_classes or max(int(d.y.max()) for d in data.values()) + 1
    predictor = predictor.cpu().eval()
    views = {s: _derive(d, predictor, device, loss_form) for s, d in data.items()}
    if loss_form == "official":
        _centre_knn(views)
    common = cfg.probe_common()
    grid = {"lrs": list(cfg.lrs), "wds": list(cfg.wds), "epochs": cfg.epochs, "batch_size": cfg.batch_size}
    ft = {"lrs": list(cfg.ft_lrs), "wds": list(cfg.ft_wds), "epochs": cfg.ft_epochs, "batch_size": cfg.ft_batch_size}
    stats = (predictor.feat_mean.clone(), predictor.feat_std.clone())
    pretrained = {k_: v.clone() for k_, v in predictor.state_dict().items()}

    def fresh_predictor() -> SCALEPredictor:
        # Same architecture and input statistics as SCALE's predictor; only the weights differ.
        p = SCALEPredictor(predictor.in_dim, predictor.hidden_dim, len(predictor.blocks),
                           predictor.blocks[0].attn.num_heads, _mlp_ratio(predictor), 0.0)
        p.set_stats(*stats)
        return p

    def pretrained_predictor() -> SCALEPredictor:
        p = fresh_predictor()
        p.load_state_dict(pretrained)
        return p

    def make(row: str):
        if row == "linear":
            return LinearProbe(LinearConfig(**common, **grid), k), "raw"
        if row == "mlp":
            return MLPProbe(MLPConfig(**common, **grid, hidden=cfg.mlp_hidden), k), "raw"
        if row == "knn":
            return KNNProbe(KNNConfig(**common, ks=[cfg.k]), k), "knn"
        if row == "scale_linear":
            return LinearProbe(LinearConfig(**common, **grid), k), "scale_linear"
        if row == "scale_knn":
            return KNNProbe(KNNConfig(**common, ks=[cfg.k]), k), "scale_knn"
        factory = fresh_predictor if row == "transformer" else pretrained_predictor
        return SetProbe(SetProbeConfig(**common, **ft), k, factory, FEATURES[loss_form]), "set"

    results: dict[str, dict] = {}
    for row in cfg.rows:
        t0 = time.perf_counter()
        probe, view = make(row)
        probe.name = row
        probe.fit(views["train"][view], views["val"][view])
        probe.evaluate(views["test"][view], "test")
        res = probe.results()
        res["seconds"] = time.perf_counter() - t0
        results[row] = res
        if out_dir is not None:
            probe.save(Path(out_dir) / row)
        if progress is not None:
            progress(row, res)
    return results


def _mlp_ratio(p: SCALEPredictor) -> float:
    return p.blocks[0].mlp[0].out_features / p.hidden_dim


def evaluate_run(run_dir: str | Path, train_store: Any, eval_store: Any, out_dir: str | Path | None = None,
                 cfg: ScaleEvalConfig | None = None, progress=None, allow_mismatch: bool = False) -> dict:
    """`vidcache scale eval RUN --train-store S1 --eval-store S2`: the table, written to results.json.

    Heads train on S1's train split, select on a val split (S1's, else S2's, else a held-out part
    of train) and report on S2's test split. `out_dir` defaults to RUN/eval. S1 and S2 must hold
    the same classes and features of the same extraction as each other and as the store the run
    was trained on (`--allow-mismatch` / `allow_mismatch=True` skips these checks).
    """
    from vidcache.cache.compat import check_source

    cfg = check(cfg or ScaleEvalConfig(), "SCALE eval config")
    t0 = time.perf_counter()
    model, scfg, info = load_run(run_dir)
    tr = _open(train_store)
    if hasattr(tr, "attrs"):
        check_source(info.get("source", {}), tr, f"SCALE run {run_dir}", "train store", allow=allow_mismatch)
    data, meta = load_splits(tr, eval_store, cfg, allow_mismatch=allow_mismatch)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "eval"
    src = info.get("source", {}).get("classes") or []
    if src and meta["classes"] and src != meta["classes"]:
        log.warning("the SCALE run was trained on a store with other classes; its labels are not used, "
                    "so this only matters if the datasets differ by mistake")
    k = max(len(meta["classes"]), max(int(d.y.max()) for d in data.values()) + 1)
    form = scfg.loss_form
    rows = evaluate_features(model.predictor, data, cfg, out, num_classes=k, progress=progress, loss_form=form)
    summary = {
        "run": str(run_dir), "loss_form": form, "scale": info.get("scale", {}), "run_hash": info.get("run_hash"),
        "config": to_dict(cfg), **meta, "num_classes": k,
        "num_videos": {s: len(d) for s, d in data.items()},
        # A list, not a dict: results.json sorts keys, and the table keeps the thesis' row order.
        "table": [{"method": TITLES[r], "val_top1": res["val"]["top1"], "test_top1": res["test"]["top1"],
                   "test_top5": res["test"].get("top5"), "test_mean_class_acc": res["test"].get("mean_class_acc"),
                   "selected": res.get("selected")} for r, res in rows.items()],
        "rows": rows, "seconds": time.perf_counter() - t0,
    }
    save_json(summary, out / "results.json")
    return summary


def results_table(summary: dict, title: str = "SCALE evaluation"):
    """A rich Table of the summary written by evaluate_run (one row per method), titled with the form."""
    from rich.table import Table

    t = Table(title=f"{title} ({summary.get('loss_form', 'official')} form)")
    for col in ("method", "val top1", "test top1", "test top5", "test mean-class", "selected"):
        t.add_column(col, justify="left" if col in ("method", "selected") else "right")
    for r in summary["table"]:
        sel = ", ".join(f"{a}={b:g}" if isinstance(b, float) else f"{a}={b}"
                        for a, b in (r.get("selected") or {}).items() if a != "index")
        t.add_row(r["method"], *(f"{r[c]:.2f}" if r.get(c) is not None else "-"
                          for c in ("val_top1", "test_top1", "test_top5", "test_mean_class_acc")), sel)
    return t
