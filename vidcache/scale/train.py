"""SCALE pretext training on cached clip embeddings: one explicit loop, AdamW, warm-up + cosine.

As in the official code (Separius/SCALE `src/train.py`: `get_parameter_groups`, `get_optimizer`):
biases, norms and the CLS / MSK tokens take no weight decay, and the learning rate warms up
linearly from 0 over the first 5 % of the steps (unrounded), then follows a cosine; step k reads the
curve at k, as the reference's LambdaLR stepped after the optimiser (`warm_up_cosine_lr_scheduler`;
`vidcache.schedule`, rule "torch").

A run folder holds:
    config.json    the ScaleConfig, the input width and where the embeddings came from
    model.pt       plain state_dict of SCALEModel (predictor + heads), loadable with weights_only=True
    last.pt        resumable state (model, optimizer, epoch, RNG), also weights_only-loadable
    metrics.jsonl  one JSON line per logged step and per finished epoch

A run restarted on the same folder resumes from last.pt and ends with the same weights as an
uninterrupted run (batches are drawn from a generator seeded by (seed, epoch)).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

import vidcache
from vidcache.config import check, config_hash, diff_fields, from_dict, hashed_dict, save_json, to_dict
from vidcache.device import resolve_device
from vidcache.errors import StoreError
from vidcache.scale.config import ScaleConfig
from vidcache.scale.data import ClipSets, check_set_size, embedding_stats
from vidcache.scale.losses import pretext_loss
from vidcache.scale.model import SCALEModel
from vidcache.schedule import warmup_cosine

MODEL_FILE, STATE_FILE, CONFIG_FILE, METRICS_FILE = "model.pt", "last.pt", "config.json", "metrics.jsonl"


def make_optimizer(model: torch.nn.Module, cfg: ScaleConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (1-D parameters: biases, norms, tokens, take none)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name.endswith("_token") else decay).append(p)
    return torch.optim.AdamW([{"params": no_decay, "weight_decay": 0.0},
                              {"params": decay, "weight_decay": cfg.weight_decay}], lr=cfg.lr)


def train_step(model: SCALEModel, opt: torch.optim.Optimizer, emb, box, mask, temperature: float) -> dict:
    """One optimisation step on a batch from ClipSets.epoch; returns the detached loss parts."""
    out = pretext_loss(model, emb, box, mask, temperature)
    opt.zero_grad(set_to_none=True)
    out["loss"].backward()
    opt.step()
    return {k: float(v.detach()) for k, v in out.items()}


def _run_identity(cfg: ScaleConfig, in_dim: int, source: dict) -> str:
    return config_hash({"scale": hashed_dict(cfg), "in_dim": in_dim, "source": source.get("config_hash", "")})


def train_scale(emb: np.ndarray, box: np.ndarray, cfg: ScaleConfig, out_dir: str | Path,
                source: dict | None = None, overwrite: bool = False, progress=None) -> SCALEModel:
    """Train SCALE on embeddings [V, C, D] and boxes [V, C, 6]; write the run into `out_dir`.

    `source` describes where the arrays came from (store path, config_hash, classes) and is kept
    in config.json. An existing run folder with the same config resumes; one with another config
    is refused unless `overwrite`. `progress(epoch, metrics)` is called after every epoch.
    """
    check(cfg, "SCALE config")
    out = Path(out_dir)
    source = dict(source or {})
    device = resolve_device(cfg.device)
    in_dim = int(emb.shape[-1])
    run_hash = _run_identity(cfg, in_dim, source)
    info = {"vidcache": vidcache.__version__, "scale": to_dict(cfg), "in_dim": in_dim, "source": source,
            "run_hash": run_hash, "num_videos": int(emb.shape[0]), "num_clips": int(emb.shape[1])}

    # Everything that can refuse the run is checked before the folder is touched, so a refused
    # command leaves nothing that blocks the corrected one.
    check_set_size(int(emb.shape[1]), cfg.clips_per_set)
    data = ClipSets.from_arrays(emb, box, device)
    state = None
    started = (out / STATE_FILE).exists() or (out / MODEL_FILE).exists()
    if (out / CONFIG_FILE).exists() and started:  # a folder without a checkpoint holds no work to keep
        old = json.loads((out / CONFIG_FILE).read_text())
        if old.get("run_hash") != run_hash and not overwrite:
            changed = diff_fields({"scale": hashed_dict(from_dict(ScaleConfig, old.get("scale", {}))),
                                   "in_dim": old.get("in_dim"), "source": old.get("source", {}).get("config_hash")},
                                  {"scale": hashed_dict(cfg), "in_dim": in_dim, "source": source.get("config_hash")})
            raise StoreError(f"{out} holds a SCALE run with another config ({', '.join(changed) or 'run hash'}); "
                             "pick a new output folder or pass overwrite")
        if old.get("run_hash") == run_hash and (out / STATE_FILE).exists():
            state = torch.load(out / STATE_FILE, map_location="cpu", weights_only=True)
    if (out / METRICS_FILE).exists():
        # Keep the lines of the epochs the checkpoint covers; later ones are redone.
        done = int(state["epoch"]) if state is not None else 0
        lines = [ln for ln in (out / METRICS_FILE).read_text().splitlines()
                 if ln.strip() and json.loads(ln).get("epoch", 0) <= done]
        (out / METRICS_FILE).write_text("".join(ln + "\n" for ln in lines))
    out.mkdir(parents=True, exist_ok=True)
    save_json(info, out / CONFIG_FILE)

    torch.manual_seed(cfg.seed)
    model = SCALEModel.from_config(in_dim, cfg)
    model.predictor.set_stats(*embedding_stats(emb) if cfg.standardize
                              else (torch.zeros(in_dim), torch.ones(in_dim)))
    model.to(device)
    opt = make_optimizer(model, cfg)
    start_epoch = 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch = int(state["epoch"])
        torch.set_rng_state(state["rng"])
        if device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], device)

    steps = data.steps_per_epoch(cfg.batch_size)
    total = steps * cfg.epochs
    warmup = cfg.warmup * total  # the reference's warm_up_iterations = warmup_percentage * t_max, unrounded
    mask_ratio = cfg.mask_ratio if cfg.bernoulli_masking else None
    model.train()
    with open(out / METRICS_FILE, "a") as log:
        for epoch in range(start_epoch, cfg.epochs):
            sums, n, t0 = {}, 0, time.perf_counter()
            batches = data.epoch(epoch, cfg.batch_size, cfg.clips_per_set, cfg.num_masked, cfg.seed, mask_ratio)
            for i, (e, b, m) in enumerate(batches):
                step = epoch * steps + i
                for group in opt.param_groups:
                    group["lr"] = warmup_cosine(step, total=total, warmup=warmup, peak=cfg.lr, final=cfg.min_lr)
                parts = train_step(model, opt, e, b, m, cfg.temperature)
                if not math.isfinite(parts["loss"]):
                    raise FloatingPointError(f"SCALE loss became {parts['loss']} at step {step}; "
                                             "lower lr or check the embeddings")
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + v * len(e)
                n += len(e)
                if (step + 1) % cfg.log_every == 0:
                    log.write(json.dumps({"step": step + 1, "epoch": epoch + 1, "lr": opt.param_groups[0]["lr"],
                                          **parts}) + "\n")
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            dt = time.perf_counter() - t0
            metrics = {"epoch": epoch + 1, **{k: v / n for k, v in sums.items()},
                       "samples_per_s": n / dt, "seconds": dt}
            log.write(json.dumps(metrics) + "\n")
            log.flush()
            last = epoch + 1 == cfg.epochs
            if last or (epoch + 1) % cfg.checkpoint_every == 0:
                _save_state(out, model, opt, epoch + 1, device)
            if progress is not None:
                progress(epoch + 1, metrics)
    torch.save(_cpu_state(model), out / MODEL_FILE)
    return model


def _cpu_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _save_state(out: Path, model, opt, epoch: int, device: torch.device) -> None:
    state = {"model": _cpu_state(model), "optimizer": opt.state_dict(), "epoch": epoch, "rng": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    tmp = out / (STATE_FILE + ".tmp")
    torch.save(state, tmp)
    tmp.replace(out / STATE_FILE)


def open_store(path: str | Path):
    """Open a clip store (vidcache.cache is imported here so the rest of scale/ works without it)."""
    from vidcache.cache.store import Store
    return Store.open(str(path), kind="clips")


def train_from_store(store: str | Path, out_dir: str | Path, cfg: ScaleConfig, overwrite: bool = False,
                     progress=None) -> SCALEModel:
    """`vidcache scale train STORE -o RUN`: load the split's done videos and train SCALE on them."""
    check(cfg, "SCALE config")
    st = open_store(store)
    arrays = st.load(arrays=("emb", "box"), split=None if cfg.split == "all" else cfg.split)
    from vidcache.cache.compat import feature_identity

    # `features` lets `scale eval` refuse stores of another extraction; it is not part of the run hash.
    source = {"store": str(store), "config_hash": st.config_hash, "classes": list(st.classes),
              "split": cfg.split, "features": feature_identity(st)}
    return train_scale(arrays["emb"], arrays["box"], cfg, out_dir, source=source, overwrite=overwrite,
                       progress=progress)


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[SCALEModel, ScaleConfig, dict]:
    """Load a finished run: (SCALEModel in eval mode, its ScaleConfig, config.json contents)."""
    run = Path(run_dir)
    if not (run / CONFIG_FILE).exists() or not (run / MODEL_FILE).exists():
        raise StoreError(f"{run} is not a finished SCALE run (needs {CONFIG_FILE} and {MODEL_FILE}); "
                         "run `vidcache scale train` first or let it finish")
    info = json.loads((run / CONFIG_FILE).read_text())
    cfg = from_dict(ScaleConfig, info["scale"], "SCALE config")
    model = SCALEModel.from_config(int(info["in_dim"]), cfg)
    model.load_state_dict(torch.load(run / MODEL_FILE, map_location="cpu", weights_only=True))
    return model.to(device).eval(), cfg, info
