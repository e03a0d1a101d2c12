"""The probes' configs, torch-free (the CLI builds its options from them without importing torch).

`ProbeConfig`: what every probe shares (splits, low-shot protocol, seed, device); `TrainConfig`: the
grid and optimisation recipe of the trained probes (`vidcache.probe.train.train_grid`); one config per
probe below, and `CONFIGS` naming them as the CLI and `run_probe` do.
"""

from __future__ import annotations

from dataclasses import dataclass

from vidcache.config import field
from vidcache.schedule import RULES

SAMPLES = ("clip", "video", "segments")
REPORTS = ("test", "best-val")
LAYOUTS = ("jepa", "vjepa2")


@dataclass
class ProbeConfig:
    """What every probe shares: splits, low-shot protocol, seed and device."""

    train_split: str = field("train", help="split the probe is trained on")
    val_split: str = field("val", help="split that selects hyper-parameters (never test)")
    test_split: str = field("test", help="split the selected probe is reported on; empty to skip")
    train_store: str = field("", help="clip store whose train split trains the probe instead of STORE's (e.g. "
                                      "cached augmented views, protocol vjepa-aug:TxK); same manifest and backbone; "
                                      "val and test still come from STORE")
    val_fraction: float = field(0.0, help="if > 0 and the store has no val split, hold out this class-balanced "
                                          "fraction of train as val")
    shots: int = field(0, help="train on this many labelled videos per class (0 = all); repeated over seeds")
    fraction: float = field(0.0, help="train on this class-balanced fraction of train (0 = all; SCALE uses 0.1)")
    repeats: int = field(3, help="low-shot repetitions (seeds seed, seed+1, ...) for --shots / --fraction")
    seed: int = field(0, help="seed of initialisation, data order and low-shot subsets")
    feature: str = field("mean", help="stored clip feature the probe reads: mean (clips/emb), cls, cls+avgpool, "
                                      "lastN, lastN+avgpool (`vidcache cache info` lists a store's)")
    report: str = field("test", help="test: select on val, report the selected probe on test once; "
                                     "best-val: report the best val score over the grid (what V-JEPA 2 "
                                     "and DINOv2 report on their evaluation split)")
    device: str = field("auto", help="cpu, cuda, cuda:N, or auto (cuda when available)", hashed=False)

    def validate(self) -> list[str]:
        p = []
        if not self.train_split or not self.val_split:
            p.append("train_split and val_split must be named")
        if not 0.0 <= self.val_fraction < 1.0:
            p.append(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.shots < 0:
            p.append(f"shots must be >= 0, got {self.shots}")
        if not 0.0 <= self.fraction <= 1.0:
            p.append(f"fraction must be in [0, 1], got {self.fraction}")
        if self.shots and self.fraction:
            p.append("give either shots or fraction, not both")
        if self.repeats < 1:
            p.append(f"repeats must be >= 1, got {self.repeats}")
        if self.report not in REPORTS:
            p.append(f"report must be one of {', '.join(REPORTS)}, got {self.report!r}")
        if not (self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            p.append(f"device must be cpu, cuda, cuda:N or auto, got {self.device!r}")
        return p

    @property
    def lowshot(self) -> bool:
        return bool(self.shots or self.fraction)


@dataclass
class TrainConfig(ProbeConfig):
    """The grid and the optimisation recipe shared by the linear, MLP and attentive probes."""

    lrs: list = field(default_factory=lambda: [3e-4, 1e-3, 3e-3, 1e-2, 3e-2],
                      help="learning rates of the grid (one head per lr x wd)")
    wds: list = field(default_factory=lambda: [1e-3, 1e-2, 1e-1, 1.0],
                      help="weight decays of the grid (AdamW: decoupled; SGD: L2 added to the gradient)")
    optimizer: str = field("adamw", help="adamw or sgd")
    momentum: float = field(0.9, help="SGD momentum")
    betas: list = field(default_factory=lambda: [0.9, 0.999], help="AdamW betas")
    eps: float = field(1e-8, help="AdamW epsilon")
    epochs: int = field(20, help="passes over the training samples")
    batch_size: int = field(256, help="training samples per step (clips with sample=clip)", hashed=False)
    warmup_epochs: float = field(1.0, help="linear warm-up length before the cosine decay")
    final_lr_ratio: float = field(0.0, help="the cosine ends at lr * final_lr_ratio")
    schedule_rule: str = field("jepa", help="which point of the warm-up + cosine curve step k reads: jepa "
                                            "(k + 1: jepa's schedulers step before computing) or torch (k: "
                                            "a torch scheduler stepped after the optimiser, as DINOv2's "
                                            "linear eval); see vidcache/schedule.py")
    final_wd: float | None = field(None, help="end every head's weight decay here by a cosine from its own "
                                              "wd (jepa's eval: 1e-6, CosineWDSchedule); none: constant")
    clip_grad: float = field(0.0, help="clip each head's gradient norm to this before the step (0 = off; "
                                       "jepa's eval clips at 1.0)")
    decay_vectors: bool = field(False, help="weight decay on biases and norm scales too (vjepa2's eval puts "
                                            "every parameter in one group); off: matrices only, as jepa")
    standardize: bool = field(True, help="standardise features with the mean and std of train (per dim)")
    sample: str = field("clip", help="clip: every view is a sample, predictions average softmax over views; "
                                     "video: the head sees all views of a video at once; segments (token "
                                     "probes): each spatial view's temporal segments joined into one sample, "
                                     "softmax averaged over spatial views (jepa's attend_across_segments)")
    grid_chunk: int = field(0, help="train at most this many heads at once (0 = all); lower it when the "
                                    "grid does not fit in memory. Results do not depend on it", hashed=False)
    eval_batch_size: int = field(1024, help="samples per step at evaluation", hashed=False)

    def validate(self) -> list[str]:
        p = super().validate()
        if not self.lrs or any(not (isinstance(v, (int, float)) and v > 0) for v in self.lrs):
            p.append(f"lrs must be a non-empty list of positive numbers, got {self.lrs}")
        if not self.wds or any(not (isinstance(v, (int, float)) and v >= 0) for v in self.wds):
            p.append(f"wds must be a non-empty list of numbers >= 0, got {self.wds}")
        if self.optimizer not in ("adamw", "sgd"):
            p.append(f"optimizer must be adamw or sgd, got {self.optimizer!r}")
        if self.epochs < 1:
            p.append(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            p.append("batch_size and eval_batch_size must be >= 1")
        if self.warmup_epochs < 0 or self.warmup_epochs > self.epochs:
            p.append(f"warmup_epochs must be in [0, epochs], got {self.warmup_epochs}")
        if not 0.0 <= self.final_lr_ratio <= 1.0:
            p.append(f"final_lr_ratio must be in [0, 1], got {self.final_lr_ratio}")
        if self.schedule_rule not in RULES:
            p.append(f"schedule_rule must be one of {', '.join(RULES)}, got {self.schedule_rule!r}")
        if self.final_wd is not None and self.final_wd < 0:
            p.append(f"final_wd must be >= 0 (or none for a constant weight decay), got {self.final_wd}")
        if self.clip_grad < 0:
            p.append(f"clip_grad must be >= 0 (0 = no clipping), got {self.clip_grad}")
        if self.sample not in SAMPLES:
            p.append(f"sample must be one of {', '.join(SAMPLES)}, got {self.sample!r}")
        if self.grid_chunk < 0:
            p.append(f"grid_chunk must be >= 0, got {self.grid_chunk}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            p.append(f"betas must be two numbers in [0, 1), got {self.betas}")
        return p

    def grid(self) -> list[dict]:
        return [{"lr": float(lr), "wd": float(wd)} for lr in self.lrs for wd in self.wds]


def _single_view_problems(pool: str, sample: str, probe: str) -> list[str]:
    """The linear and MLP probes see one clip embedding at a time (or, with pool=mean, one per video)."""
    p = []
    if pool not in ("none", "mean"):
        p.append(f"pool must be none or mean, got {pool!r}")
    if sample != "clip":
        p.append(f"the {probe} probe trains on single views: sample must be clip (use pool=mean for videos)")
    return p


@dataclass
class LinearConfig(TrainConfig):
    """Linear probe: DINOv2-style bank of heads; 5 lrs x 4 wds = 20 heads by default."""

    pool: str = field("none", help="none: per-clip training, softmax averaged over clips; "
                                   "mean: one sample per video, the mean of its clip embeddings")

    def validate(self) -> list[str]:
        return super().validate() + _single_view_problems(self.pool, self.sample, "linear")


@dataclass
class MLPConfig(TrainConfig):
    """MLP probe: `depth` hidden layers of width `hidden` (GELU), then a linear classifier."""

    hidden: int = field(1024, help="width of the hidden layers")
    depth: int = field(2, help="number of hidden layers (>= 1)")
    pool: str = field("none", help="none: per-clip training, softmax averaged over clips; mean: per-video mean")
    lrs: list = field(default_factory=lambda: [1e-4, 3e-4, 1e-3, 3e-3], help="learning rates of the grid")
    wds: list = field(default_factory=lambda: [1e-4, 1e-2, 1e-1], help="weight decays of the grid")

    def validate(self) -> list[str]:
        p = super().validate()
        if self.hidden < 1:
            p.append(f"hidden must be >= 1, got {self.hidden}")
        if self.depth < 1:
            p.append(f"depth must be >= 1, got {self.depth}")
        return p + _single_view_problems(self.pool, self.sample, "MLP")


@dataclass
class AttentiveConfig(TrainConfig):
    """jepa's recipe: AdamW lr 1e-3, wd 0.01, cosine to 0, 20 epochs, softmax mean over views."""

    num_heads: int = field(12, help="attention heads (must divide the token dim)")
    mlp_ratio: float = field(4.0, help="MLP width / token dim in the cross-attention block")
    layout: str = field("jepa", help="jepa: self-attention blocks on the query after the cross-attention, "
                                     "xattn.proj kept but unused; vjepa2: blocks on the tokens before it, "
                                     "no xattn.proj")
    depth: int = field(1, help="1 = cross-attention block only (jepa's eval); V-JEPA 2's probe is 4")
    pos_embed: bool = field(False, help="with sample=segments, add jepa's fixed 1-D sin-cos temporal position "
                                        "embedding to every token at its frame number (ClipAggregation "
                                        "use_pos_embed; off in jepa's and vjepa2's eval configs)")
    lrs: list = field(default_factory=lambda: [1e-3], help="learning rates of the grid")
    wds: list = field(default_factory=lambda: [0.01], help="weight decays of the grid")
    warmup_epochs: float = field(0.0, help="linear warm-up length before the cosine decay (jepa: 0)")
    batch_size: int = field(64, help="training samples per step", hashed=False)
    standardize: bool = field(False, help="standardise tokens with the train mean / std (jepa does not)")
    eval_batch_size: int = field(128, help="samples per step at evaluation", hashed=False)

    def validate(self) -> list[str]:
        p = super().validate()
        if self.num_heads < 1:
            p.append(f"num_heads must be >= 1, got {self.num_heads}")
        if self.mlp_ratio <= 0:
            p.append(f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        if self.depth < 1:
            p.append(f"depth must be >= 1, got {self.depth}")
        if self.layout not in LAYOUTS:
            p.append(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.pos_embed and self.sample != "segments":
            p.append(f"pos_embed embeds the segments of a view joined into one sequence: it needs "
                     f"sample=segments, got sample={self.sample!r}")
        return p


@dataclass
class KNNConfig(ProbeConfig):
    """kNN probe: every k in `ks` evaluated from one search; the k reported on test is chosen on val."""

    ks: list = field(default_factory=lambda: [10, 20, 100, 200], help="numbers of neighbours to evaluate")
    temperature: float = field(0.07, help="vote weight = exp(cosine similarity / temperature)")
    views: str = field("mean", help="mean: a video is the mean of its l2-normalised clips; vote: every clip "
                                    "queries the bank of all training clips and the video sums its clips' votes")
    query_batch: int = field(4096, help="queries per faiss search call", hashed=False)

    def validate(self) -> list[str]:
        p = super().validate()
        if not self.ks or any(not isinstance(k, int) or k < 1 for k in self.ks):
            p.append(f"ks must be a non-empty list of positive integers, got {self.ks}")
        if self.temperature <= 0:
            p.append(f"temperature must be > 0, got {self.temperature}")
        if self.views not in ("mean", "vote"):
            p.append(f"views must be mean or vote, got {self.views!r}")
        if self.query_batch < 1:
            p.append("query_batch must be >= 1")
        return p


# The probe of each name; `vidcache.probe.run.PROBES` holds the classes that run them.
CONFIGS = {"linear": LinearConfig, "attentive": AttentiveConfig, "knn": KNNConfig, "mlp": MLPConfig}
