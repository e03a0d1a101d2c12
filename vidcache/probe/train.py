"""The one training loop of the probes: a grid of heads trained together, selected on val.

`train_grid` trains G copies of one head architecture, one per (lr, wd) pair, in a single pass over
the data: each batch is read, standardised and fed once, all heads see it together and all are
updated in the same step (DINOv2's linear evaluation does the same with its bank of linear heads).
The heads' parameters live stacked as [G, ...] tensors; a head class may provide a batched forward
(`grid_forward`: the linear bank as one GEMM, the attentive head as one bmm per layer and one fused
attention over all heads), otherwise `torch.func.vmap` over
`functional_call` batches any architecture. Since the heads never interact, the summed loss gives
each head exactly the gradient it would get alone, and the optimiser below applies per-head learning
rates and weight decays elementwise: head i of a grid equals that head trained on its own.

Heads are modules taking a batch dict (`head(batch) -> logits [B, K]`, `batch["x"]` is [B, ...]), so
any model on cached features (a linear layer, an MLP, an attentive pooler, SCALE's predictor) trains
here. Samples are either single views (`sample="clip"`: every clip is a training example and a
video's prediction averages the softmax over its clips) or whole videos (`sample="video"`: the head
sees all C views at once).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vidcache.device import resolve_device
from vidcache.probe.config import REPORTS, SAMPLES, ProbeConfig, TrainConfig  # noqa: F401  (re-exported)
from vidcache.probe.data import ProbeData
from vidcache.schedule import cosine, warmup_cosine


class GridOptimizer:
    """AdamW or SGD over stacked [G, ...] parameters with a learning rate and weight decay per head.

    torch's optimisers take one lr per parameter tensor; here one tensor holds all G heads, so the
    update is written out with the per-head values broadcast along dim 0. The arithmetic follows
    torch.optim.AdamW / SGD (decoupled decay for AdamW, L2 on the gradient for SGD). Weight decay
    skips per-head vectors (biases, norm scales), as jepa's probe does, unless `decay_vectors`
    (vjepa2's probe decays every parameter). `step(..., wds=...)` replaces the per-head weight
    decays for that step (a weight-decay schedule); `clip` clips each head's gradient norm first.
    """

    def __init__(self, params: list[torch.Tensor], lrs: list[float], wds: list[float], kind: str = "adamw",
                 momentum: float = 0.9, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 decay_vectors: bool = False, clip: float = 0.0):
        dev = params[0].device
        self.params, self.kind, self.momentum, self.betas, self.eps = params, kind, momentum, betas, eps
        self.lr = torch.tensor(lrs, dtype=torch.float32, device=dev)
        self.wd = torch.tensor(wds, dtype=torch.float32, device=dev)
        self.decay = [decay_vectors or p.ndim - 1 >= 2 for p in params]
        self.clip = float(clip)
        self.state: list[dict] = [{} for _ in params]
        self.t = 0

    def clip_(self, grads: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
        """Each head's gradients scaled as torch.nn.utils.clip_grad_norm_(head.parameters(), clip)
        scales one head's: by min(1, clip / (norm + 1e-6)), the norm over all of that head's gradients."""
        used = [g for g in grads if g is not None]
        sq = sum(g.float().pow(2).flatten(1).sum(1) for g in used)
        coef = (self.clip / (sq.sqrt() + 1e-6)).clamp(max=1.0)
        return [None if g is None else g * coef.view((-1,) + (1,) * (g.ndim - 1)).to(g.dtype) for g in grads]

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor], scale: float, wds: list[float] | None = None) -> None:
        self.t += 1
        b1, b2 = self.betas
        if self.clip > 0:
            grads = self.clip_(grads)
        wd_all = self.wd if wds is None else torch.tensor(wds, dtype=torch.float32, device=self.wd.device)
        for p, g, decay, st in zip(self.params, grads, self.decay, self.state):
            if g is None:  # a parameter the forward never uses (jepa's xattn.proj): torch skips it too
                continue
            shape = (-1,) + (1,) * (p.ndim - 1)
            lr = (self.lr * scale).view(shape)
            wd = wd_all.view(shape)
            if self.kind == "adamw":
                if decay:
                    p.mul_(1.0 - lr * wd)
                if not st:
                    st["m"], st["v"] = torch.zeros_like(p), torch.zeros_like(p)
                m, v = st["m"], st["v"]
                m.lerp_(g, 1.0 - b1)
                v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
                denom = (v.sqrt() / math.sqrt(1.0 - b2 ** self.t)).add_(self.eps)
                p.sub_((lr / (1.0 - b1 ** self.t)) * m / denom)
            else:
                if decay:
                    g = g.add(wd * p)
                if self.momentum:
                    if "buf" not in st:
                        st["buf"] = g.clone()
                    else:
                        st["buf"].mul_(self.momentum).add_(g)
                    g = st["buf"]
                p.sub_(lr * g)


class Standardizer:
    """Per-dimension mean / std fitted on train features (all views, all real tokens)."""

    def __init__(self, mean: np.ndarray, std: np.ndarray):
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)

    @classmethod
    def fit(cls, data: ProbeData) -> "Standardizer":
        d = data.dim
        x = data.x.reshape(-1, d)
        if data.mask is not None:
            x = x[data.mask.reshape(-1)]
        s1, s2, n = np.zeros(d), np.zeros(d), 0
        for s in range(0, len(x), 65536):  # float64 sums in slabs: exact enough, bounded memory
            xb = x[s:s + 65536].astype(np.float64)
            s1 += xb.sum(0)
            s2 += (xb * xb).sum(0)
            n += len(xb)
        mean = s1 / max(n, 1)
        var = np.maximum(s2 / max(n, 1) - mean * mean, 0.0)
        return cls(mean, np.maximum(np.sqrt(var), 1e-6))  # constant dims stay finite

    @classmethod
    def identity(cls, dim: int) -> "Standardizer":
        return cls(np.zeros(dim), np.ones(dim))


class _Samples:
    """A split on the device, indexed as training samples (clips or videos)."""

    def __init__(self, data: ProbeData, sample: str, norm: Standardizer, device: torch.device):
        n, c = data.x.shape[:2]
        self.n_videos, self.views, self.sample = n, c, sample
        flat = sample != "video"  # clip and segments: every (regrouped) view is a sample

        def put(a: np.ndarray) -> torch.Tensor:
            a = a.reshape(n * c, *a.shape[2:]) if flat else a
            return torch.from_numpy(np.ascontiguousarray(a)).to(device)

        self.x = put(data.x)
        self.mask = None if data.mask is None else put(data.mask)
        self.extras = {k: put(v) for k, v in data.extras.items()}
        y = np.repeat(data.y, c) if flat else data.y
        self.y = torch.from_numpy(np.ascontiguousarray(y)).to(device)
        self.mean = torch.from_numpy(norm.mean).to(device)
        self.std = torch.from_numpy(norm.std).to(device)

    def __len__(self) -> int:
        return len(self.y)

    def batch(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (self.x[idx].float() - self.mean) / self.std
        b = {"x": x, "y": self.y[idx]}
        if self.mask is not None:
            b["mask"] = self.mask[idx]
        for k, v in self.extras.items():
            b[k] = v[idx].float()
        return b


def stack_heads(make_head: Callable[[], nn.Module], num: int, seed: int, device: torch.device):
    """One head built under `seed`, copied `num` times: every head of a grid starts identical, so a
    head's result depends only on its own hyper-parameters and the seed, not on the grid around it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = make_head()
    head = head.to(device)
    params = {n: p.detach().unsqueeze(0).repeat(num, *([1] * p.ndim)).requires_grad_(True)
              for n, p in head.named_parameters()}
    buffers = {n: b.detach().unsqueeze(0).repeat(num, *([1] * b.ndim)) for n, b in head.named_buffers()}
    return head, params, buffers


def grid_forward(head: nn.Module, params: dict, buffers: dict, batch: dict) -> torch.Tensor:
    """Logits [G, B, K] of G stacked heads on one batch."""
    if getattr(head, "grid_forward", None) is not None:
        return head.grid_forward(params, batch)

    def one(p, b, bt):
        return torch.func.functional_call(head, (p, b), (bt,))

    return torch.func.vmap(one, in_dims=(0, 0, None))(params, buffers, batch)


@torch.no_grad()
def grid_scores(head: nn.Module, params: dict, buffers: dict, data: ProbeData, norm: Standardizer,
                sample: str, device: torch.device, batch_size: int = 1024) -> torch.Tensor:
    """Per-video probabilities [G, n, K] on CPU: the mean of the softmax over a video's views."""
    head.eval()
    s = _Samples(data, sample, norm, device)
    per = s.views if sample != "video" else 1
    step = max(1, batch_size // per)
    out = []
    for v0 in range(0, s.n_videos, step):
        v1 = min(v0 + step, s.n_videos)
        idx = torch.arange(v0 * per, v1 * per, device=device)
        p = grid_forward(head, params, buffers, s.batch(idx)).float().softmax(-1)
        out.append(p.view(p.shape[0], v1 - v0, per, -1).mean(2).cpu())
    return torch.cat(out, 1)


@dataclass
class GridResult:
    """The trained grid: stacked head parameters, the val score of every head, the selected one."""

    head: nn.Module
    params: dict            # name -> [G, ...] on CPU
    buffers: dict
    grid: list              # [{"lr", "wd"}] per head
    val: list               # per head: {"top1", "top5", "nll"}
    best: int
    train_loss: list        # per head: mean loss of the last epoch
    norm: Standardizer
    sample: str
    seconds: float

    def state_dict(self, g: int | None = None) -> dict[str, torch.Tensor]:
        """The plain state_dict of head g (the selected one by default), loadable into the head class."""
        g = self.best if g is None else g
        return {**{k: v[g].clone() for k, v in self.params.items()},
                **{k: v[g].clone() for k, v in self.buffers.items()}}

    def scores(self, data: ProbeData, heads: list[int] | None = None, device: str | torch.device = "cpu",
               batch_size: int = 1024) -> np.ndarray:
        """Probabilities [len(heads), n, K] (all heads by default), averaged over views."""
        heads = list(range(len(self.grid))) if heads is None else heads
        dev = torch.device(device)
        sel = torch.tensor(heads)
        p = {k: v[sel].to(dev) for k, v in self.params.items()}
        b = {k: v[sel].to(dev) for k, v in self.buffers.items()}
        return grid_scores(self.head.to(dev), p, b, data, self.norm, self.sample, dev, batch_size).numpy()


def select_best(val: list[dict]) -> int:
    """Highest val top-1, ties broken by lower val NLL, then by grid order; diverged heads never win."""
    def key(i):
        t, nll = val[i]["top1"], val[i]["nll"]
        return (t if np.isfinite(t) else -np.inf, -nll if np.isfinite(nll) else -np.inf, -i)
    return max(range(len(val)), key=key)


def _val_summary(probs: torch.Tensor, y: np.ndarray) -> list[dict]:
    yt = torch.from_numpy(y)
    out = []
    for p in probs:
        finite = bool(torch.isfinite(p).all())
        k5 = min(5, p.shape[1])
        top = p.topk(k5, dim=1).indices
        t1 = float((top[:, 0] == yt).float().mean() * 100) if finite else float("nan")
        t5 = float((top == yt[:, None]).any(1).float().mean() * 100) if finite else float("nan")
        nll = float(-p.gather(1, yt[:, None]).clamp_min(1e-12).log().mean()) if finite else float("nan")
        out.append({"top1": t1, "top5": t5, "nll": nll})
    return out


def train_grid(make_head: Callable[[], nn.Module], grid: list[dict], train: ProbeData, val: ProbeData,
               cfg: TrainConfig, on_step: Callable[[int, int], None] | None = None) -> GridResult:
    """Train one head per grid point (dicts with "lr", "wd") in one pass per step; select on val."""
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    norm = Standardizer.fit(train) if cfg.standardize else Standardizer.identity(train.dim)
    chunk = cfg.grid_chunk or len(grid)
    pieces = [grid[i:i + chunk] for i in range(0, len(grid), chunk)]
    samples = _Samples(train, cfg.sample, norm, device)
    steps_per_epoch = math.ceil(len(samples) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    done = [0]

    def tick():
        done[0] += 1
        if on_step is not None:
            on_step(done[0], total * len(pieces))

    params, buffers, losses, head = [], [], [], None
    for piece in pieces:
        head, p, b, loss = _train_piece(make_head, piece, samples, cfg, device, steps_per_epoch, tick)
        params.append(p)
        buffers.append(b)
        losses += loss
    params = {k: torch.cat([p[k] for p in params]) for k in params[0]}
    buffers = {k: torch.cat([b[k] for b in buffers]) for k in buffers[0]}
    del samples
    probs = grid_scores(head, {k: v.to(device) for k, v in params.items()},
                        {k: v.to(device) for k, v in buffers.items()}, val, norm, cfg.sample, device,
                        cfg.eval_batch_size)
    val_scores = _val_summary(probs, val.y)
    return GridResult(head=head.cpu(), params=params, buffers=buffers, grid=list(grid), val=val_scores,
                      best=select_best(val_scores), train_loss=losses, norm=norm, sample=cfg.sample,
                      seconds=time.perf_counter() - t0)


def schedules(step: int, total: int, warmup: int, grid: list[dict], cfg: TrainConfig
              ) -> tuple[float, list[float] | None]:
    """(lr factor, per-head weight decays or None) of 0-based step `step`: a linear warm-up from 0
    and a cosine to `final_lr_ratio`; with `final_wd`, each head's weight decay by cosine from its
    own to `final_wd` (jepa's WarmupCosineSchedule and CosineWDSchedule, one rule for both)."""
    lr = warmup_cosine(step, total=total, warmup=warmup, peak=1.0, final=cfg.final_lr_ratio,
                       rule=cfg.schedule_rule)
    if cfg.final_wd is None:
        return lr, None
    return lr, [cosine(step, total=total, start=g["wd"], final=cfg.final_wd, rule=cfg.schedule_rule)
                for g in grid]


def _train_piece(make_head, grid, samples: _Samples, cfg: TrainConfig, device, steps_per_epoch, tick):
    head, params, buffers = stack_heads(make_head, len(grid), cfg.seed, device)
    head.train()
    names = list(params)
    plist = [params[n] for n in names]
    opt = GridOptimizer(plist, [g["lr"] for g in grid], [g["wd"] for g in grid], cfg.optimizer,
                        cfg.momentum, tuple(cfg.betas), cfg.eps, cfg.decay_vectors, cfg.clip_grad)
    # The data order depends on the seed only, never on the grid: a head trained alone sees the
    # same batches in the same order as inside any grid.
    gen = torch.Generator().manual_seed(cfg.seed)
    total = cfg.epochs * steps_per_epoch
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    g_count, step = len(grid), 0
    epoch_loss = torch.zeros(g_count, device=device)
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(samples), generator=gen).to(device)
        epoch_loss.zero_()
        for s in range(steps_per_epoch):
            idx = perm[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            batch = samples.batch(idx)
            logits = grid_forward(head, params, buffers, batch)  # [G, B, K]
            bsz, k = logits.shape[1], logits.shape[2]
            per = F.cross_entropy(logits.reshape(-1, k).float(), batch["y"].repeat(g_count),
                                  reduction="none").view(g_count, bsz).mean(1)
            # The sum of independent heads' losses: each head's gradient is its own loss's gradient.
            grads = torch.autograd.grad(per.sum(), plist, allow_unused=True)
            opt.step(list(grads), *schedules(step, total, warmup, grid, cfg))
            epoch_loss += per.detach() * bsz
            step += 1
            tick()
    losses = (epoch_loss / len(samples)).cpu().tolist()
    return (head, {n: p.detach().cpu() for n, p in params.items()},
            {n: b.cpu() for n, b in buffers.items()}, losses)
