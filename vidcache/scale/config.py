"""SCALE configuration: the predictor's shape, the pretext task and the training schedule.

Defaults follow the official code (github.com/Separius/SCALE: `src/train.py` arguments, `src/scale.py`),
which produced the published numbers: a 2-layer predictor of width 256 with 8 heads, MLP ratio 2 and
dropout 0.1; two sets of K = 8 clips drawn from the 16 stored per video; each clip masked with
probability 0.25; temperature 0.2; AdamW (lr 3e-4, weight decay 1e-4) with a 5 % linear warm-up and
a cosine; batch 512 for 200 epochs. `loss_form` picks the official losses and heads, or the thesis'
equations (4.6-4.8) with a head per side of each pair and exactly round(0.25 K) masked clips per set;
docs/scale.md says how they differ.
"""

from __future__ import annotations

from dataclasses import dataclass

from vidcache.config import field

LOSS_FORMS = ("official", "thesis")


@dataclass
class ScaleConfig:
    loss_form: str = field("official", help="official: the released code's losses and heads (MCM one way over "
                                            "both sets of the batch, SET symmetric x0.5, loss (SET + MCM) / 2, "
                                            "Bernoulli clip masking); thesis: eqs. 4.6-4.8 with four heads")
    # predictor
    hidden_dim: int = field(256, help="Predictor width; clip embeddings are projected to it.")
    depth: int = field(2, help="Transformer encoder layers in the predictor.")
    num_heads: int = field(8, help="Attention heads per layer (must divide hidden_dim; official: hidden / 32).")
    mlp_ratio: float = field(2.0, help="Width of each layer's MLP relative to hidden_dim.")
    dropout: float = field(0.1, help="Dropout inside the predictor's layers (attention, projections, MLP).")
    standardize: bool = field(True, help="Standardise each embedding dimension with the training "
                                          "store's mean/std before the predictor and the target head "
                                          "(vidcache's addition: backbones differ by orders of magnitude in scale).")
    # contrastive heads
    pred_head_hidden: int = field(4096, help="official: hidden width of the 2-layer bias-free MCM prediction "
                                             "and SET heads")
    target_head_hidden: int = field(2048, help="official: hidden width of the 3-layer bias-free MCM target head "
                                               "on the clip feature")
    head_hidden: int = field(512, help="thesis: hidden width of its four 3-layer heads")
    proj_dim: int = field(128, help="Output width of the contrastive heads (the common space).")
    temperature: float = field(0.2, help="InfoNCE temperature tau of both losses.")
    # pretext task
    clips_per_set: int = field(8, help="K: clips per set; each step draws 2K distinct stored clips "
                                        "per video and splits them into two sets.")
    mask_ratio: float = field(0.25, help="official: each clip is replaced by the MSK token with this "
                                         "probability; thesis: this fraction of each set, rounded, at least "
                                         "one clip and never the whole set")
    # optimisation
    epochs: int = field(200, help="Passes over the training videos.")
    batch_size: int = field(512, help="Videos per step (each contributes two sets of K clips).")
    lr: float = field(3e-4, help="Peak AdamW learning rate.")
    min_lr: float = field(0.0, help="Learning rate at the end of the cosine schedule.")
    weight_decay: float = field(1e-4, help="AdamW weight decay (not on biases, norms and the CLS / MSK tokens).")
    warmup: float = field(0.05, help="Linear warm-up as a fraction of all steps, before the cosine decay.")
    seed: int = field(0, help="Seed for initialisation, set sampling and masking.")
    split: str = field("train", help="Store split used for self-supervised training ('all' = every split).")
    # where and how fast (not part of the result)
    device: str = field("auto", help="'auto' (cuda when available), 'cpu' or 'cuda[:i]'.", hashed=False)
    checkpoint_every: int = field(10, help="Epochs between resumable checkpoints.", hashed=False)
    log_every: int = field(50, help="Steps between metric lines in metrics.jsonl.", hashed=False)

    @property
    def bernoulli_masking(self) -> bool:
        """Each clip masked independently (official) rather than a fixed count per set (thesis)."""
        return self.loss_form == "official"

    @property
    def num_masked(self) -> int:
        """Thesis form: clips masked in each set, the ratio rounded, kept within [1, K - 1]."""
        return min(max(1, round(self.mask_ratio * self.clips_per_set)), self.clips_per_set - 1)

    def validate(self) -> list[str]:
        p = []
        if self.loss_form not in LOSS_FORMS:
            p.append(f"loss_form must be one of {', '.join(LOSS_FORMS)} (got {self.loss_form!r})")
        for name in ("hidden_dim", "depth", "num_heads", "head_hidden", "pred_head_hidden", "target_head_hidden",
                     "proj_dim", "epochs",
                     "batch_size", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                p.append(f"{name} must be >= 1 (got {getattr(self, name)})")
        if self.num_heads >= 1 and self.hidden_dim % self.num_heads:
            p.append(f"num_heads ({self.num_heads}) must divide hidden_dim ({self.hidden_dim})")
        if self.mlp_ratio <= 0:
            p.append(f"mlp_ratio must be > 0 (got {self.mlp_ratio})")
        if not 0 <= self.dropout < 1:
            p.append(f"dropout must be in [0, 1) (got {self.dropout})")
        if self.temperature <= 0:
            p.append(f"temperature must be > 0 (got {self.temperature})")
        if self.clips_per_set < 2:
            p.append(f"clips_per_set must be >= 2 so a set keeps an unmasked clip (got {self.clips_per_set})")
        if not 0 < self.mask_ratio < 1:
            p.append(f"mask_ratio must be in (0, 1) (got {self.mask_ratio})")
        if self.lr <= 0:
            p.append(f"lr must be > 0 (got {self.lr})")
        if not 0 <= self.min_lr <= self.lr:
            p.append(f"min_lr must be in [0, lr] (got {self.min_lr})")
        if self.weight_decay < 0:
            p.append(f"weight_decay must be >= 0 (got {self.weight_decay})")
        if not 0 <= self.warmup < 1:
            p.append(f"warmup must be a fraction in [0, 1) (got {self.warmup})")
        if not (self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda")):
            p.append(f"device must be 'auto', 'cpu' or 'cuda[:i]' (got {self.device!r})")
        return p


ROWS = ("linear", "mlp", "knn", "transformer", "scale_linear", "scale_knn", "scale_ft")


@dataclass
class ScaleEvalConfig:
    rows: list = field(default_factory=lambda: list(ROWS), help=f"rows of the table, any of {', '.join(ROWS)}")
    train_split: str = field("train", help="split of --train-store the heads are trained on")
    val_split: str = field("val", help="split that selects hyper-parameters: taken from --train-store, "
                                       "else --eval-store, else carved out of train (val_fraction)")
    test_split: str = field("test", help="split of --eval-store the table reports")
    val_fraction: float = field(0.1, help="class-balanced fraction of train held out as val when no store "
                                          "has a val split")
    epochs: int = field(20, help="epochs of the linear and MLP heads")
    lrs: list = field(default_factory=lambda: [1e-4, 1e-3, 1e-2], help="learning rates of the linear/MLP grid")
    wds: list = field(default_factory=lambda: [1e-4, 1e-2], help="weight decays of the linear/MLP grid")
    mlp_hidden: int = field(1024, help="hidden width of the MLP baseline")
    ft_epochs: int = field(30, help="epochs of Transformer and SCALE_ft")
    ft_lrs: list = field(default_factory=lambda: [1e-4, 3e-4, 1e-3], help="learning rates of Transformer / SCALE_ft")
    ft_wds: list = field(default_factory=lambda: [1e-4, 5e-2], help="weight decays of Transformer / SCALE_ft")
    ft_batch_size: int = field(64, help="videos per step for Transformer / SCALE_ft", hashed=False)
    k: int = field(20, help="neighbours of the kNN rows (the thesis always uses 20)")
    seed: int = field(0, help="seed of the heads' initialisation and data order")
    device: str = field("auto", help="cpu, cuda, cuda:N or auto", hashed=False)
    batch_size: int = field(256, help="clips per step for the linear / MLP heads", hashed=False)

    def validate(self) -> list[str]:
        p = []
        bad = [r for r in self.rows if r not in ROWS]
        if bad or not self.rows:
            p.append(f"rows must be a non-empty subset of {', '.join(ROWS)} (got {self.rows})")
        if not self.train_split or not self.val_split or not self.test_split:
            p.append("train_split, val_split and test_split must be named")
        if not 0.0 <= self.val_fraction < 1.0:
            p.append(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        for name in ("epochs", "ft_epochs", "ft_batch_size", "k", "batch_size", "mlp_hidden"):
            if getattr(self, name) < 1:
                p.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lrs", "ft_lrs"):
            if not getattr(self, name) or any(v <= 0 for v in getattr(self, name)):
                p.append(f"{name} must be a non-empty list of positive numbers, got {getattr(self, name)}")
        for name in ("wds", "ft_wds"):
            if not getattr(self, name) or any(v < 0 for v in getattr(self, name)):
                p.append(f"{name} must be a non-empty list of numbers >= 0, got {getattr(self, name)}")
        if not (self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            p.append(f"device must be cpu, cuda, cuda:N or auto, got {self.device!r}")
        return p

    def probe_common(self) -> dict:
        return {"train_split": "train", "val_split": "val", "test_split": "test", "seed": self.seed,
                "device": self.device}
