"""SCALE configuration: the predictor's shape, the pretext task and the training schedule.

Defaults follow the thesis (ch. 4): a 2-layer encoder with hidden size 256, two sets of K = 8
clips drawn from the 16 stored per video, 25 % of each set masked (the ablation's best), batch
512, 500 epochs, Adam with cosine annealing. Values the thesis leaves open (temperature, head
sizes, learning rate) are ordinary contrastive-learning choices and are all configurable.
"""

from __future__ import annotations

from dataclasses import dataclass

from vidcache.config import field


@dataclass
class ScaleConfig:
    # predictor
    hidden_dim: int = field(256, help="Predictor width; clip embeddings are projected to it.")
    depth: int = field(2, help="Transformer encoder layers in the predictor.")
    num_heads: int = field(4, help="Attention heads per layer (must divide hidden_dim).")
    mlp_ratio: float = field(4.0, help="Width of each layer's MLP relative to hidden_dim.")
    dropout: float = field(0.0, help="Dropout inside the predictor's layers.")
    standardize: bool = field(True, help="Standardise each embedding dimension with the training "
                                          "store's mean/std before the input projection.")
    # contrastive heads
    head_hidden: int = field(512, help="Hidden width of the 3-layer contrastive MLP heads.")
    proj_dim: int = field(128, help="Output width of the contrastive heads (the common space).")
    temperature: float = field(0.1, help="InfoNCE temperature tau.")
    # pretext task
    clips_per_set: int = field(8, help="K: clips per set; each step draws 2K distinct stored clips "
                                        "per video and splits them into two sets.")
    mask_ratio: float = field(0.25, help="Fraction of each set replaced by the MSK token "
                                         "(rounded, at least one clip, never the whole set).")
    # optimisation
    epochs: int = field(500, help="Passes over the training videos.")
    batch_size: int = field(512, help="Videos per step (each contributes two sets of K clips).")
    lr: float = field(5e-4, help="Peak Adam learning rate.")
    min_lr: float = field(0.0, help="Learning rate at the end of the cosine schedule.")
    weight_decay: float = field(0.0, help="Adam (L2) weight decay.")
    warmup_epochs: int = field(0, help="Linear warm-up epochs before the cosine decay (0 = none).")
    seed: int = field(0, help="Seed for initialisation, set sampling and masking.")
    split: str = field("train", help="Store split used for self-supervised training ('all' = every split).")
    # where and how fast (not part of the result)
    device: str = field("auto", help="'auto' (cuda when available), 'cpu' or 'cuda[:i]'.", hashed=False)
    checkpoint_every: int = field(10, help="Epochs between resumable checkpoints.", hashed=False)
    log_every: int = field(50, help="Steps between metric lines in metrics.jsonl.", hashed=False)

    @property
    def num_masked(self) -> int:
        """Clips masked in each set: the ratio rounded, kept within [1, K - 1]."""
        return min(max(1, round(self.mask_ratio * self.clips_per_set)), self.clips_per_set - 1)

    def validate(self) -> list[str]:
        p = []
        for name in ("hidden_dim", "depth", "num_heads", "head_hidden", "proj_dim", "epochs",
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
        if self.warmup_epochs < 0 or (self.epochs >= 1 and self.warmup_epochs >= self.epochs):
            p.append(f"warmup_epochs must be in [0, epochs) (got {self.warmup_epochs})")
        if not (self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda")):
            p.append(f"device must be 'auto', 'cpu' or 'cuda[:i]' (got {self.device!r})")
        return p
