"""The SCALE predictor: a small transformer over a set of cached clip embeddings.

Each clip enters as its (standardised) embedding projected to the hidden width, or as the learned
MSK token when masked; every token, masked or not, gets the position encoding P = MLP(box) of its
normalised space-time box; a learned CLS token is prepended. The encoder returns one output per
clip (the Ĉ_i) and the CLS output (the set summary, "SET token").

As in the official code (Separius/SCALE `src/scale.py`, class `Scale`): the position MLP is
Linear(6, 2H)-ReLU-Linear(2H, H) (the official boxes have a 7th entry), the CLS and MSK tokens
start at zero, and the layers are pre-norm ViT blocks with dropout on the attention weights, the
attention output and the MLP. Linear layers use Xavier initialisation (vidcache's choice; it keeps
narrow predictors training).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        B, N, D = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        # Written out rather than F.scaled_dot_product_attention: sets are short (K <= ~16 clips),
        # so fused kernels gain nothing, and plain ops batch under torch.func.vmap, which the
        # probes' grid training uses to fine-tune many copies of the predictor at once.
        attn = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
        attn = F.dropout(attn.softmax(dim=-1), self.dropout, self.training)
        return self.proj_drop(self.proj((attn @ v).transpose(1, 2).reshape(B, N, D)))


class Block(nn.Module):
    """Pre-norm transformer layer (as in ViT), stable without warm-up at small depth."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def _init_linear(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def mlp(in_dim: int, hidden: int, out_dim: int, layers: int = 3, bias: bool = True) -> nn.Sequential:
    """Linear-GELU stack without batch norm (neither the thesis' nor the official heads use one);
    the official heads (`get_head` in `src/scale.py`) have no biases."""
    mods: list[nn.Module] = []
    dims = [in_dim] + [hidden] * (layers - 1) + [out_dim]
    for i in range(layers):
        mods.append(nn.Linear(dims[i], dims[i + 1], bias=bias))
        if i < layers - 1:
            mods.append(nn.GELU())
    return nn.Sequential(*mods)


class SCALEPredictor(nn.Module):
    """Set transformer over clip embeddings [B, K, D] and boxes [B, K, 6].

    `forward(emb, box, mask)` returns `(clips [B, K, H], cls [B, H])`; `mask` [B, K] bool marks the
    clips replaced by the MSK token (None = no masking, as at evaluation).
    """

    def __init__(self, in_dim: int, hidden_dim: int = 256, depth: int = 2, num_heads: int = 8,
                 mlp_ratio: float = 2.0, dropout: float = 0.1):
        super().__init__()
        self.in_dim, self.hidden_dim = in_dim, hidden_dim
        # Per-dimension statistics of the training embeddings; identity until set_stats().
        # Cached backbones differ by orders of magnitude in scale, so this keeps one lr working.
        self.register_buffer("feat_mean", torch.zeros(in_dim))
        self.register_buffer("feat_std", torch.ones(in_dim))
        self.input_proj = nn.Linear(in_dim, hidden_dim)
        self.box_mlp = nn.Sequential(nn.Linear(6, 2 * hidden_dim), nn.ReLU(), nn.Linear(2 * hidden_dim, hidden_dim))
        self.mask_token = nn.Parameter(torch.zeros(hidden_dim))
        self.cls_token = nn.Parameter(torch.zeros(hidden_dim))
        self.blocks = nn.ModuleList(Block(hidden_dim, num_heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(hidden_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Xavier keeps each layer's gain near 1 at any width (as in MAE); std-0.02 weights, tuned
        # for 768-wide ViTs, shrink the signal in narrow predictors and stall training.
        _init_linear(self)
        for m in self.modules():
            if isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.mask_token)
        nn.init.zeros_(self.cls_token)

    @torch.no_grad()
    def set_stats(self, mean: Tensor, std: Tensor) -> None:
        self.feat_mean.copy_(mean)
        self.feat_std.copy_(std.clamp_min(1e-6))

    def normalize(self, emb: Tensor) -> Tensor:
        """The clip feature x the predictor reads: the embedding standardised with the training statistics
        (unchanged when `standardize` was off)."""
        return (emb.float() - self.feat_mean) / self.feat_std

    def embed(self, emb: Tensor) -> Tensor:
        """Clip embeddings [..., D] as the predictor sees them: standardised and projected to H."""
        return self.input_proj(self.normalize(emb))

    def forward(self, emb: Tensor, box: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = self.embed(emb)
        if mask is not None:
            x = torch.where(mask.unsqueeze(-1), self.mask_token.to(x.dtype), x)
        x = x + self.box_mlp(box.float())
        x = torch.cat([self.cls_token.expand(x.shape[0], 1, -1), x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        return x[:, 1:], x[:, 0]


class SCALEModel(nn.Module):
    """Predictor plus the contrastive heads of the pretext task; only `predictor` is kept for evaluation.

    official (`src/scale.py`): `mcm_pred` (2 x pred_head_hidden, no bias) maps a clip output Ĉ_i into
    the common space, `mcm_target` (3 x target_head_hidden, no bias) maps the clip feature x_i there,
    and one `set_head` (2 x pred_head_hidden, no bias) serves the CLS outputs of both sets.
    thesis: each pair has its own two 3-layer heads, as in L_ctr(A, B, θ_A, θ_B): `mcm_pred` on Ĉ_i,
    `mcm_target` on the projected clip embedding, `set_a` and `set_b` on the two CLS outputs.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 256, depth: int = 2, num_heads: int = 8,
                 mlp_ratio: float = 2.0, dropout: float = 0.1, head_hidden: int = 512, proj_dim: int = 128,
                 loss_form: str = "official", pred_head_hidden: int = 4096, target_head_hidden: int = 2048):
        super().__init__()
        self.loss_form = loss_form
        self.predictor = SCALEPredictor(in_dim, hidden_dim, depth, num_heads, mlp_ratio, dropout)
        if loss_form == "official":
            self.mcm_pred = mlp(hidden_dim, pred_head_hidden, proj_dim, layers=2, bias=False)
            self.mcm_target = mlp(in_dim, target_head_hidden, proj_dim, layers=3, bias=False)
            self.set_head = mlp(hidden_dim, pred_head_hidden, proj_dim, layers=2, bias=False)
            heads = (self.mcm_pred, self.mcm_target, self.set_head)
        elif loss_form == "thesis":
            self.mcm_pred = mlp(hidden_dim, head_hidden, proj_dim)
            self.mcm_target = mlp(hidden_dim, head_hidden, proj_dim)
            self.set_a = mlp(hidden_dim, head_hidden, proj_dim)
            self.set_b = mlp(hidden_dim, head_hidden, proj_dim)
            heads = (self.mcm_pred, self.mcm_target, self.set_a, self.set_b)
        else:
            raise ValueError(f"loss_form must be official or thesis, got {loss_form!r}")
        for head in heads:
            _init_linear(head)

    @classmethod
    def from_config(cls, in_dim: int, cfg) -> "SCALEModel":
        return cls(in_dim, cfg.hidden_dim, cfg.depth, cfg.num_heads, cfg.mlp_ratio, cfg.dropout,
                   cfg.head_hidden, cfg.proj_dim, cfg.loss_form, cfg.pred_head_hidden, cfg.target_head_hidden)
