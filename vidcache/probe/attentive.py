"""Attentive probe on stored tokens: one learnable query cross-attends to a clip's tokens.

The architecture and parameter names are those of facebookresearch/jepa's `AttentiveClassifier`
(`src/models/attentive_pooler.py`): `pooler.query_tokens`, `pooler.cross_attention_block.{norm1,
xattn.q, xattn.kv, xattn.proj, norm2, mlp.fc1, mlp.fc2}`, `linear`, so a state_dict saved by jepa
loads strictly here and gives the same logits. Two additions: a padding mask (videos whose token
counts differ), and all heads of the lr x wd grid trained together through `train_grid`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from vidcache.config import field
from vidcache.probe.base import GridProbe
from vidcache.probe.train import TrainConfig


@dataclass
class AttentiveConfig(TrainConfig):
    """jepa's recipe: AdamW lr 1e-3, wd 0.01, cosine to 0 after warm-up, 20 epochs, softmax mean over views."""

    num_heads: int = field(12, help="attention heads (must divide the token dim)")
    mlp_ratio: float = field(4.0, help="MLP width / token dim in the cross-attention block")
    depth: int = field(1, help="1 = cross-attention block only (jepa's default); more adds self-attention blocks")
    lrs: list = field(default_factory=lambda: [1e-3], help="learning rates of the grid")
    wds: list = field(default_factory=lambda: [0.01], help="weight decays of the grid")
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
        return p


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over [B, H, N, d]; `mask` [B, L] keeps True keys.

    Written out rather than F.scaled_dot_product_attention so it batches under vmap on every
    backend; the result equals SDPA's (same scale, same softmax)."""
    att = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
    if mask is not None:
        att = att.masked_fill(~mask[:, None, None, :], float("-inf"))
    return att.softmax(-1) @ v


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class CrossAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, q: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = q.shape
        h = self.num_heads
        q = self.q(q).reshape(b, n, h, c // h).permute(0, 2, 1, 3)
        kv = self.kv(x).reshape(b, x.shape[1], 2, h, c // h).permute(2, 0, 3, 1, 4)
        q = _attend(q, kv[0], kv[1], mask)
        return self.proj(q.transpose(1, 2).reshape(b, n, c))


class CrossAttentionBlock(nn.Module):
    """q + xattn(q, norm1(x)), then + mlp(norm2(q)): the tokens are normalised, the query is not."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.xattn = CrossAttention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(self, q, x, mask=None):
        q = q + self.xattn(q, self.norm1(x), mask)
        return q + self.mlp(self.norm2(q))


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        return self.proj(_attend(qkv[0], qkv[1], qkv[2], None).transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """Pre-norm self-attention block (jepa's `Block`), used on the queries when depth > 1."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class AttentivePooler(nn.Module):
    def __init__(self, num_queries: int = 1, embed_dim: int = 768, num_heads: int = 12, mlp_ratio: float = 4.0,
                 depth: int = 1, init_std: float = 0.02, qkv_bias: bool = True):
        super().__init__()
        self.query_tokens = nn.Parameter(torch.zeros(1, num_queries, embed_dim))
        self.cross_attention_block = CrossAttentionBlock(embed_dim, num_heads, mlp_ratio, qkv_bias)
        self.blocks = (nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio, qkv_bias) for _ in range(depth - 1)])
                       if depth > 1 else None)
        self.init_std = init_std
        nn.init.trunc_normal_(self.query_tokens, std=init_std)
        self.apply(self._init_weights)
        # Residual branches start small: each output projection is divided by sqrt(2 * layer).
        with torch.no_grad():
            self.cross_attention_block.xattn.proj.weight.div_(math.sqrt(2.0))
            self.cross_attention_block.mlp.fc2.weight.div_(math.sqrt(2.0))
            for i, blk in enumerate(self.blocks or []):
                blk.attn.proj.weight.div_(math.sqrt(2.0 * (i + 2)))
                blk.mlp.fc2.weight.div_(math.sqrt(2.0 * (i + 2)))

    def _init_weights(self, m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=self.init_std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        q = self.query_tokens.expand(len(x), -1, -1)
        q = self.cross_attention_block(q, x, mask)
        for blk in self.blocks or []:
            q = blk(q)
        return q


class AttentiveClassifier(nn.Module):
    """Attentive pooler + linear classifier; `forward(tokens [B, L, D], mask [B, L]) -> logits [B, K]`."""

    def __init__(self, embed_dim: int = 768, num_heads: int = 12, mlp_ratio: float = 4.0, depth: int = 1,
                 init_std: float = 0.02, qkv_bias: bool = True, num_classes: int = 1000):
        super().__init__()
        if embed_dim % num_heads:
            from vidcache.errors import ConfigError
            raise ConfigError([f"num_heads {num_heads} does not divide the token dim {embed_dim}"], "attentive probe")
        self.pooler = AttentivePooler(1, embed_dim, num_heads, mlp_ratio, depth, init_std, qkv_bias)
        self.linear = nn.Linear(embed_dim, num_classes, bias=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.linear(self.pooler(x, mask).squeeze(1))


class AttentiveHead(AttentiveClassifier):
    """The classifier on a batch dict: a clip's tokens [B, L, D], or with sample="video" all views'
    tokens [B, C, L, D] concatenated into one sequence; `batch["mask"]` marks real tokens."""

    def forward(self, batch: dict) -> torch.Tensor:  # type: ignore[override]
        x, mask = batch["x"], batch.get("mask")
        if x.ndim == 4:
            x = x.flatten(1, 2)
            mask = None if mask is None else mask.flatten(1, 2)
        return super().forward(x, mask)


class AttentiveProbe(GridProbe):
    name = "attentive"
    Config = AttentiveConfig
    arrays = ("tokens",)

    def make_head(self, dim: int, num_classes: int) -> nn.Module:
        return AttentiveHead(dim, self.cfg.num_heads, self.cfg.mlp_ratio, self.cfg.depth, num_classes=num_classes)
