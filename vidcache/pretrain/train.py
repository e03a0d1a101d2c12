"""`vidcache pretrain vjepa|tdv`: one training loop for every objective; checkpoints, resume, metrics, DDP.

    cfg = PretrainConfig(codes="codes.zarr", out="run", model="vit_micro", steps=300, batch_size=8)
    summary = pretrain(cfg)           # or: torchrun --nproc-per-node 2 -m vidcache pretrain vjepa ...
    summary = pretrain(TDVConfig(codes="codes.zarr", out="tdv_run"))   # the TDV objective

Objectives are plug-ins (vidcache.pretrain.objective): V-JEPA (vidcache.pretrain.vjepa) and TDV
(vidcache.pretrain.tdv) share the loader, DDP, optimiser, checkpoints and everything below.

Run directory:
- `config.json`: the config of the run (written when it starts);
- `ckpt_{step:06d}.pt`: checkpoints (step 0 = the random initialisation), written atomically and
  loadable with `torch.load(weights_only=True)`; each is a `vidcache:` backbone (the target encoder)
  and records `pretrain_flops`, the training FLOPs of every step so far (below);
- `metrics.jsonl`: one record per logged step (step, loss, lr, wd, momentum, samples/s, frames/s, and
  the objective's own terms, e.g. TDV's mse_loss / dino_loss / ibot_loss);
- `loss.png`: the loss curve, drawn when the run ends.

Resume: a run whose directory holds checkpoints continues from the latest one: the objective's
modules (encoders, EMA targets, predictor or heads and centres), optimiser, step and RNG state are restored, and the data order, augmentations and masks
are functions of (seed, step), so the loss curve continues exactly where it stopped (bit-exact on
CPU). Fields that change the result must match the checkpoint's config; those marked hashed=False
(steps, device, workers, ...) may change between calls.

Training FLOPs (`pretrain_flops`): counted by the same counter as extraction's inference FLOPs
(`vidcache.models.flops.flop_counter`: matmul, conv and attention, multiply and add counted apart)
over each step's forward and backward of the objective's model, measured, not estimated as 3x the
forward: the EMA target's forward (no backward) counts once, the trained parts' backward as it ran.
The optimiser, the EMA update and the decoding of the codes are not counted. A step's count depends
only on its input shapes: the first step of each shape runs under the counter (TDV: one), or the
objective computes it (V-JEPA, whose mask lengths change every step, fits its count once per process
from counted one-clip steps of a model copy: `VJEPAObjective.step_flops`), so training is not slowed.
A resumed run, which restores the total, gives the count of an uninterrupted one; under DDP the
ranks' counts are summed at every checkpoint.

DDP: under torchrun every rank builds the same model from the seed, reads the same code store and
takes its interleaved share of each global batch; masks are drawn for the global batch and sliced
(V-JEPA) and TDV reduces over the global batch, so N processes take the same steps as one process
with the same global batch.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from pathlib import Path
from typing import Any, Callable

import torch

from vidcache.config import check, diff_fields, hashed_dict, save_json, to_dict
from vidcache.device import resolve_device
from vidcache.distributed import DistInfo, barrier, destroy_distributed, init_distributed
from vidcache.errors import ConfigError, VidcacheError
from vidcache.models.backbone import IMAGENET_MEAN, IMAGENET_STD
from vidcache.models.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint_atomic
from vidcache.models.flops import flop_counter
from vidcache.pretrain.config import DTYPES, LOADERS, PretrainConfig, RunConfig  # noqa: F401  (re-exported)
from vidcache.pretrain.loader import (
    ClipDecoder,
    ClipSampling,
    CodeClipDataset,
    CodeSource,
    Mp4ClipDataset,
    PixelDecoder,
    StreamSampler,
    check_sampling,
    make_loader,
    out_grid_for,
)
from vidcache.pretrain.objective import Objective

CKPT_RE = re.compile(r"^ckpt_(\d{6,})\.pt$")
# ----------------------------------------------------------------------------- run directory

def checkpoint_path(out: str | Path, step: int) -> Path:
    return Path(out) / f"ckpt_{step:06d}.pt"


def list_checkpoints(out: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint in a run directory, oldest first."""
    out = Path(out)
    if not out.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in out.iterdir() if (m := CKPT_RE.match(p.name))]
    return sorted(found)


def latest_checkpoint(out: str | Path) -> Path | None:
    ckpts = list_checkpoints(out)
    return ckpts[-1][1] if ckpts else None


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _check_compatible(cfg: RunConfig, saved: dict, path: Path) -> None:
    mine = hashed_dict(cfg)
    theirs = {k: saved.get(k, "<missing>") for k in mine}
    diffs = diff_fields(json.loads(json.dumps(mine)), json.loads(json.dumps(theirs)))
    if diffs:
        raise ConfigError([f"{path.name} was trained with other settings: {', '.join(diffs)}; "
                           "use the same options, or another run directory (or resume=False with an empty one)"],
                          "pretrain resume")


def _write_loss_png(metrics: Path, png: Path, label: str = "loss") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = png.with_name(png.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(png)


def _shapes(obj: Any) -> tuple:
    """The shapes of every tensor in a nest of tensors, lists and dicts: what a step's FLOPs depend on."""
    if isinstance(obj, torch.Tensor):
        return tuple(obj.shape)
    if isinstance(obj, dict):
        return tuple((k, _shapes(v)) for k, v in sorted(obj.items()))
    if isinstance(obj, (list, tuple)):
        return tuple(_shapes(v) for v in obj)
    return ()


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop records past `step` (written after the checkpoint a resumed run starts from)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    tmp.replace(path)


# ----------------------------------------------------------------------------- the loop

def objective_class(cfg: Any) -> type[Objective]:
    """The objective plug-in a config trains (`PretrainConfig`: V-JEPA, `TDVConfig`: TDV)."""
    name = getattr(cfg, "objective", "vjepa")
    if name == "tdv":
        from vidcache.pretrain.tdv import TDVObjective

        return TDVObjective
    from vidcache.pretrain.vjepa import VJEPAObjective

    return VJEPAObjective


class Trainer:
    """One rank's state: data, objective, optimiser. `pretrain` drives it; tests use it directly.

    Everything objectives share lives here (see vidcache.pretrain.objective): the loader and device
    decoder, DDP, AdamW with per-group lr scales, autocast, clipping, checkpoints and RNG state.
    """

    def __init__(self, cfg: Any, device: torch.device, rank: int = 0, world: int = 1):
        self.cfg, self.device, self.rank, self.world = cfg, device, rank, world
        if cfg.batch_size % world:
            raise ConfigError([f"batch_size {cfg.batch_size} is not divisible by the {world} ranks"], "pretrain config")
        self.local_batch = cfg.batch_size // world
        self.source = CodeSource.from_store(cfg.codes, cfg.split)
        kind = objective_class(cfg)
        out_grid = out_grid_for(self.source, cfg.crop_size)
        problems = check_sampling(self.source, out_grid, cfg.patch_size)
        stride = 1
        if not problems:
            try:
                stride = kind.frame_stride(cfg, self.source)
            except ConfigError as err:
                problems += err.problems
            else:
                problems += kind.check_source(cfg, self.source, stride)
        if problems:
            raise ConfigError(problems, "pretrain config")
        self.frame_stride = stride
        self.image_size = out_grid * self.source.patch
        self.sampling = ClipSampling(cfg.num_frames, stride, out_grid, cfg.crop_scale, cfg.crop_aspect,
                                     cfg.flip, cfg.seed)
        try:
            self.objective: Objective = kind(cfg, image_size=self.image_size, device=device, rank=rank, world=world)
        except ValueError as err:
            raise ConfigError([str(err)], "pretrain config") from err
        self.model = self.objective.model
        self.groups = self.objective.param_groups()
        self.optimizer = torch.optim.AdamW([{k: v for k, v in g.items()} for g in self.groups],
                                           lr=0.0, betas=tuple(cfg.betas))
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        # A step is done with its clips before the next batch is decoded, so one output buffer serves all.
        if cfg.loader == "codes":
            self.decoder = ClipDecoder(self.source.centroids, self.source.patch, self.mean, self.std,
                                       reuse_output=True).to(device)
        else:
            self.decoder = PixelDecoder(self.mean, self.std, reuse_output=True).to(device)
        self.step = 0
        self.ddp = self.model
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None)
        use_bf16 = cfg.dtype == "bf16" or (cfg.dtype == "auto" and device.type == "cuda")
        self.autocast_dtype = torch.bfloat16 if use_bf16 else None
        # Training FLOPs: every rank's since the last `sync_flops` (local) and the run's total at it.
        self.flops, self.local_flops = 0, 0
        self._step_flops: dict[tuple, int] = {}

    # -- data
    def loader(self, workers: int | None = None):
        sampler = StreamSampler(len(self.source), self.local_batch, self.rank, self.world, self.cfg.seed,
                                start_step=self.step)
        ds = CodeClipDataset(self.source, self.sampling) if self.cfg.loader == "codes" else \
            Mp4ClipDataset(self.source, self.sampling)
        workers = self.cfg.workers if workers is None else workers
        return make_loader(ds, sampler, workers, pin_memory=self.device.type == "cuda")

    def video(self, batch: dict) -> torch.Tensor:
        """A loader batch as normalised clips [B, 3, T, H, W] on the device."""
        return self.decoder(batch["codes"] if "codes" in batch else batch["pixels"], batch["flip"])

    # -- one step
    def train_step(self, batch: dict) -> dict:
        cfg = self.cfg
        sched = self.objective.schedules(self.step)
        lr, wd, momentum = sched["lr"], sched["wd"], sched["momentum"]
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
            group["weight_decay"] = wd if group.get("apply_wd", True) else 0.0
        video = self.video(batch)
        inputs = self.objective.inputs(self.step)
        self.ddp.train()
        self.optimizer.zero_grad(set_to_none=True)
        # A step's FLOPs depend only on its input shapes. The objective may give them (V-JEPA, whose
        # mask lengths change every step); otherwise the first step of each shape runs under the
        # counter (forward and backward measured) and the others add the same count.
        flops = self.objective.step_flops(self.count_flops, video, inputs)
        key = None if flops is not None else _shapes((video, inputs))
        counter = flop_counter() if key is not None and key not in self._step_flops else contextlib.nullcontext()
        with counter:
            with self.autocast():
                out = self.ddp(video, **inputs)
            loss, metrics = out if isinstance(out, tuple) else (out, {})
            loss.backward()
        if key is not None:
            if key not in self._step_flops:
                self._step_flops[key] = int(counter.get_total_flops())
            flops = self._step_flops[key]
        self.local_flops += int(flops)
        if cfg.clip_grad is not None:
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], cfg.clip_grad)
        self.optimizer.step()
        self.objective.after_step(momentum)
        self.step += 1
        return {"loss": loss.detach(), "lr": lr, "wd": wd, "momentum": momentum,
                "metrics": {k: v.detach() for k, v in metrics.items()}}

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                              enabled=self.autocast_dtype is not None)

    def count_flops(self, fn: Callable[[], Any]) -> int:
        """FLOPs of `fn()` under the step's autocast, by the counter of every FLOPs figure."""
        counter = flop_counter()
        with counter, self.autocast():
            fn()
        return int(counter.get_total_flops())

    # -- checkpoints
    def sync_flops(self) -> int:
        """Add every rank's FLOPs since the last call to the run's total (all ranks call it together)."""
        local = self.local_flops
        if self.world > 1:
            t = torch.tensor([local], dtype=torch.int64, device=self.device)
            torch.distributed.all_reduce(t)
            local = int(t.item())
        self.flops += local
        self.local_flops = 0
        return self.flops

    def state(self) -> dict:
        part = dict(self.objective.checkpoint())
        preprocess = {"mean": list(self.mean), "std": list(self.std), "frame_stride": self.frame_stride,
                      "num_frames": self.cfg.num_frames, "image_size": self.image_size}
        return make_checkpoint(part.pop("model_config"), part.pop("target_encoder"), encoder=part.pop("encoder"),
                               step=self.step, preprocess=preprocess, objective=self.objective.name,
                               optimizer=self.optimizer.state_dict(), rng=_rng_state(), config=to_dict(self.cfg),
                               code_store={"patch": self.source.patch, "grid": self.source.grid},
                               pretrain_flops=self.flops + self.local_flops, **part)

    def load_state(self, ckpt: dict, path: Path) -> None:
        _check_compatible(self.cfg, ckpt.get("config") or {}, path)
        if ckpt.get("objective", "vjepa") != self.objective.name:
            raise ConfigError([f"{path.name} was trained with the {ckpt.get('objective', 'vjepa')} objective, "
                               f"not {self.objective.name}; use another run directory"], "pretrain resume")
        self.objective.load(ckpt)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        _set_rng_state(ckpt["rng"])
        self.step = int(ckpt["step"])
        self.flops, self.local_flops = int(ckpt.get("pretrain_flops") or 0), 0

    def save(self, out: Path) -> Path:
        return save_checkpoint_atomic(self.state(), checkpoint_path(out, self.step))


def pretrain(cfg: Any, progress: Callable[[int, int, dict], None] | None = None) -> dict:
    """Train (or resume) an encoder from a code store; returns a summary of the run.

    `cfg` picks the objective: a `PretrainConfig` trains V-JEPA, a `TDVConfig` trains TDV.

    `progress(step, steps, record)` is called on rank 0 after each logged step.
    """
    check(cfg, "pretrain config")
    dist = DistInfo.from_env()
    device = resolve_device(cfg.device, dist.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    created = init_distributed(dist, device)
    try:
        return _run(cfg, device, dist, progress)
    finally:
        destroy_distributed(created)


def _run(cfg: Any, device: torch.device, dist: DistInfo, progress) -> dict:
    rank, world = dist.rank, dist.world
    out = Path(cfg.out)
    trainer = Trainer(cfg, device, rank, world)
    metrics_path = out / "metrics.jsonl"
    latest = latest_checkpoint(out) if cfg.resume else None
    resumed_from = None
    if latest is not None:
        trainer.load_state(load_checkpoint(latest), latest)
        resumed_from = str(latest)
    elif list_checkpoints(out):
        raise VidcacheError(f"{out} already holds checkpoints; resume (the default) or use an empty run directory")
    barrier(dist)  # every rank has chosen its starting checkpoint before rank 0 writes step 0
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        save_json(cfg, out / "config.json")
        if resumed_from is None:
            metrics_path.unlink(missing_ok=True)
            trainer.save(out)  # step 0: the random initialisation, a baseline for evaluation
        else:
            _truncate_metrics(metrics_path, trainer.step)
    barrier(dist)

    end = cfg.steps if cfg.stop_at is None else min(cfg.steps, cfg.stop_at)
    start_step = trainer.step
    losses: list[float] = []
    t0 = time.perf_counter()
    t_log, steps_since = t0, 0
    clip_frames = cfg.batch_size * cfg.num_frames
    if trainer.step < end:
        it = iter(trainer.loader())
        try:
            while trainer.step < end:
                rec = trainer.train_step(next(it))
                steps_since += 1
                step = trainer.step
                if step % cfg.log_every == 0 or step == end:
                    names = sorted(rec["metrics"])
                    values = torch.stack([rec["loss"].float()] + [rec["metrics"][k].float() for k in names])
                    if world > 1:  # every value is a rank's share times the world: the mean is global
                        torch.distributed.all_reduce(values)
                        values = values / world
                    values = values.tolist()
                    now = time.perf_counter()
                    rate = steps_since / max(now - t_log, 1e-9)
                    record = {"step": step, "loss": values[0], "lr": rec["lr"], "wd": rec["wd"],
                              "momentum": rec["momentum"], "samples_per_s": rate * cfg.batch_size,
                              "frames_per_s": rate * clip_frames, "time": now - t0,
                              **dict(zip(names, values[1:]))}
                    t_log, steps_since = now, 0
                    losses.append(record["loss"])
                    if rank == 0:
                        with open(metrics_path, "a") as f:
                            f.write(json.dumps(record) + "\n")
                        if progress is not None:
                            progress(step, cfg.steps, record)
                if step % cfg.checkpoint_every == 0 or step == end:
                    trainer.sync_flops()
                    if rank == 0:
                        trainer.save(out)
                    barrier(dist)
        finally:
            del it  # stop DataLoader workers before the process group goes away
    seconds = time.perf_counter() - t0
    if rank == 0 and metrics_path.is_file():
        _write_loss_png(metrics_path, out / "loss.png", trainer.objective.loss_label)
    done = trainer.step - start_step
    return {"out": str(out), "step": trainer.step, "steps": cfg.steps, "resumed_from": resumed_from,
            "last_loss": losses[-1] if losses else None, "seconds": seconds,
            "steps_per_s": done / max(seconds, 1e-9), "world": world, "device": str(device),
            "checkpoint": str(checkpoint_path(out, trainer.step)), "image_size": trainer.image_size,
            "pretrain_flops": trainer.flops}
