"""Attentive probe on stored tokens: one learnable query cross-attends to a clip's tokens.

Two layouts, one set of parameter names (those of the references' `AttentiveClassifier`:
`pooler.query_tokens`, `pooler.cross_attention_block.{norm1, xattn.q, xattn.kv, norm2, mlp.fc1,
mlp.fc2}`, `pooler.blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}`, `linear`), so a
state_dict saved by either reference loads strictly here and gives its logits:

- `jepa` (facebookresearch/jepa, `src/models/attentive_pooler.py` and `src/models/utils/modules.py`):
  the cross-attention has an output projection `xattn.proj` that is created, initialised and
  rescaled but never applied in `forward`; it is kept (it is in every jepa state_dict) and left
  unused here too. With depth > 1 the self-attention `blocks` run on the *query after* the
  cross-attention. Rescaled at init: `xattn.proj` and the cross block's `mlp.fc2` by 1/sqrt(2),
  block i (1-based) by 1/sqrt(2 (i + 1)).
- `vjepa2` (facebookresearch/vjepa2, same two files): no `xattn.proj`; the `blocks` run on the
  *tokens before* the cross-attention (V-JEPA 2's 4-block probe is depth 4). Rescaled at init:
  block i (0-based) by 1/sqrt(2 (i + 1)), the cross block's `mlp.fc2` by 1/sqrt(2 (depth - 1))
  (1/sqrt(2) at depth 1).

Both initialise every linear layer and the query with a truncated normal of std 0.02 and zero
biases, and layer norms at (1, 0). Two additions: a padding mask (videos whose token counts differ;
padded tokens are never attended to), and all heads of the lr x wd grid trained together through
`train_grid`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vidcache.probe.base import GridProbe
from vidcache.probe.config import LAYOUTS, AttentiveConfig
from vidcache.probe.data import ProbeData


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over [B, H, N, d]; `mask` [B, L] keeps True keys.

    Written out rather than F.scaled_dot_product_attention so it batches under vmap on every
    backend; the result equals SDPA's (same scale, same softmax), which both references call."""
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
    """Multi-head attention of queries on tokens. `proj` exists only for the jepa layout, which
    stores it and never applies it (jepa's `CrossAttention.forward` returns the heads' output)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, with_proj: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        if with_proj:
            self.proj = nn.Linear(dim, dim)

    def forward(self, q: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = q.shape
        h = self.num_heads
        q = self.q(q).reshape(b, n, h, c // h).permute(0, 2, 1, 3)
        kv = self.kv(x).reshape(b, x.shape[1], 2, h, c // h).permute(2, 0, 3, 1, 4)
        return _attend(q, kv[0], kv[1], mask).transpose(1, 2).reshape(b, n, c)


class CrossAttentionBlock(nn.Module):
    """q + xattn(q, norm1(x)), then + mlp(norm2(q)): the tokens are normalised, the query is not."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 with_proj: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.xattn = CrossAttention(dim, num_heads, qkv_bias, with_proj)
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

    def forward(self, x, mask=None):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        return self.proj(_attend(qkv[0], qkv[1], qkv[2], mask).transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """Pre-norm self-attention block (the references' `Block`); `mask` [B, L] hides padded keys."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(self, x, mask=None):
        x = x + self.attn(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


class AttentivePooler(nn.Module):
    def __init__(self, num_queries: int = 1, embed_dim: int = 768, num_heads: int = 12, mlp_ratio: float = 4.0,
                 depth: int = 1, init_std: float = 0.02, qkv_bias: bool = True, layout: str = "jepa"):
        super().__init__()
        if layout not in LAYOUTS:
            from vidcache.errors import ConfigError
            raise ConfigError([f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}"], "attentive probe")
        self.layout = layout
        self.query_tokens = nn.Parameter(torch.zeros(1, num_queries, embed_dim))
        self.cross_attention_block = CrossAttentionBlock(embed_dim, num_heads, mlp_ratio, qkv_bias,
                                                         with_proj=layout == "jepa")
        self.blocks = (nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio, qkv_bias) for _ in range(depth - 1)])
                       if depth > 1 else None)
        self.init_std = init_std
        nn.init.trunc_normal_(self.query_tokens, std=init_std, a=-2.0, b=2.0)
        self.apply(self._init_weights)
        self._rescale_blocks()

    @torch.no_grad()
    def _rescale_blocks(self) -> None:
        """Residual branches start small: output projections divided by sqrt(2 * layer), counted
        as each reference counts its layers (see the module docstring)."""
        cross, blocks = self.cross_attention_block, list(self.blocks or [])
        if self.layout == "jepa":
            cross.xattn.proj.weight.div_(math.sqrt(2.0))
            cross.mlp.fc2.weight.div_(math.sqrt(2.0))
            for i, blk in enumerate(blocks, 1):
                blk.attn.proj.weight.div_(math.sqrt(2.0 * (i + 1)))
                blk.mlp.fc2.weight.div_(math.sqrt(2.0 * (i + 1)))
        else:
            for i, blk in enumerate(blocks):
                blk.attn.proj.weight.div_(math.sqrt(2.0 * (i + 1)))
                blk.mlp.fc2.weight.div_(math.sqrt(2.0 * (i + 1)))
            cross.mlp.fc2.weight.div_(math.sqrt(2.0 * max(len(blocks), 1)))

    def _init_weights(self, m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=self.init_std, a=-2.0, b=2.0)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.layout == "vjepa2":
            for blk in self.blocks or []:
                x = blk(x, mask)
        q = self.query_tokens.expand(len(x), -1, -1)
        q = self.cross_attention_block(q, x, mask)
        if self.layout == "jepa":
            for blk in self.blocks or []:
                q = blk(q)
        return q


class AttentiveClassifier(nn.Module):
    """Attentive pooler + linear classifier; `forward(tokens [B, L, D], mask [B, L]) -> logits [B, K]`."""

    def __init__(self, embed_dim: int = 768, num_heads: int = 12, mlp_ratio: float = 4.0, depth: int = 1,
                 init_std: float = 0.02, qkv_bias: bool = True, num_classes: int = 1000, layout: str = "jepa"):
        super().__init__()
        if embed_dim % num_heads:
            from vidcache.errors import ConfigError
            raise ConfigError([f"num_heads {num_heads} does not divide the token dim {embed_dim}"], "attentive probe")
        self.pooler = AttentivePooler(1, embed_dim, num_heads, mlp_ratio, depth, init_std, qkv_bias, layout)
        self.linear = nn.Linear(embed_dim, num_classes, bias=True)
        # The references build `linear` with torch's default init (it is outside the pooler's apply).

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.linear(self.pooler(x, mask).squeeze(1))


def _glinear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """G linear layers at once: x [G, ..., in], w [G, out, in], b [G, out] -> [G, ..., out] (one bmm)."""
    g = w.shape[0]
    x3 = x.reshape(g, -1, x.shape[-1])
    y = torch.bmm(x3, w.transpose(1, 2)) if b is None else torch.baddbmm(b[:, None, :], x3, w.transpose(1, 2))
    return y.view(*x.shape[:-1], w.shape[1])


def _gnorm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """G LayerNorms (eps 1e-5, nn.LayerNorm's) with per-head affine: x [G or 1, ..., D], w, b [G, D]."""
    shape = (w.shape[0],) + (1,) * (x.ndim - 2) + (w.shape[-1],)
    return F.layer_norm(x, x.shape[-1:], eps=1e-5) * w.view(shape) + b.view(shape)


def _gattend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """`_attend` for G heads' [G, B, H, N, d] through one fused scaled_dot_product_attention call."""
    g, b = q.shape[:2]
    m = None
    if mask is not None:  # [B, L] -> [G*B, 1, 1, L]
        m = mask[None, :, None, None, :].expand(g, -1, -1, -1, -1).reshape(g * b, 1, 1, mask.shape[-1])
    out = F.scaled_dot_product_attention(q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1), attn_mask=m)
    return out.view(q.shape[:-2] + out.shape[-2:])


class AttentiveHead(AttentiveClassifier):
    """The classifier on a batch dict: a sample's tokens [B, L, D] (one clip, or with
    sample="segments" one spatial view's segments concatenated), or with sample="video" all views'
    tokens [B, C, L, D] joined into one sequence; `batch["mask"]` marks real tokens.

    `grid_forward` runs G heads of a grid (stacked [G, ...] parameters) in one pass over the shared
    token batch: every linear layer is one batched matmul, every attention one fused
    scaled_dot_product_attention over G * B, the same arithmetic as `forward` head by head."""

    def forward(self, batch: dict) -> torch.Tensor:  # type: ignore[override]
        x, mask = self._tokens(batch)
        return super().forward(x, mask)

    @staticmethod
    def _tokens(batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        x, mask = batch["x"], batch.get("mask")
        if x.ndim == 4:
            x = x.flatten(1, 2)
            mask = None if mask is None else mask.flatten(1, 2)
        return x, mask

    def grid_forward(self, params: dict, batch: dict) -> torch.Tensor:
        """Logits [G, B, K] of the G heads whose parameters are stacked in `params`."""
        x, mask = self._tokens(batch)
        pooler = self.pooler
        heads = pooler.cross_attention_block.xattn.num_heads

        def p(name: str) -> torch.Tensor | None:
            return params.get(name)

        def mlp(h, pre):
            h = F.gelu(_glinear(h, p(pre + "fc1.weight"), p(pre + "fc1.bias")))
            return _glinear(h, p(pre + "fc2.weight"), p(pre + "fc2.bias"))

        def split(t, parts):  # [G, B, N, parts * C] -> [parts, G, B, H, N, C / H]
            g, b, n, c = t.shape
            return t.view(g, b, n, parts, heads, c // (parts * heads)).permute(3, 0, 1, 4, 2, 5)

        def merge(t):  # [G, B, H, N, d] -> [G, B, N, H * d]
            return t.transpose(2, 3).flatten(3)

        def block(h, i, m):
            pre = f"pooler.blocks.{i}."
            a = _gnorm(h, p(pre + "norm1.weight"), p(pre + "norm1.bias"))
            qkv = split(_glinear(a, p(pre + "attn.qkv.weight"), p(pre + "attn.qkv.bias")), 3)
            a = merge(_gattend(qkv[0], qkv[1], qkv[2], m))
            h = h + _glinear(a, p(pre + "attn.proj.weight"), p(pre + "attn.proj.bias"))
            return h + mlp(_gnorm(h, p(pre + "norm2.weight"), p(pre + "norm2.bias")), pre + "mlp.")

        g = params["linear.weight"].shape[0]
        depth = len(pooler.blocks or [])
        h = x.unsqueeze(0)  # shared by the G heads: the first LayerNorm is computed once, its affine per head
        if pooler.layout == "vjepa2":
            for i in range(depth):
                h = block(h, i, mask)
        pre = "pooler.cross_attention_block."
        q = p("pooler.query_tokens").expand(g, len(x), -1, -1)  # [G, 1, 1, D] -> [G, B, 1, D]
        kv = _glinear(_gnorm(h, p(pre + "norm1.weight"), p(pre + "norm1.bias")),
                      p(pre + "xattn.kv.weight"), p(pre + "xattn.kv.bias"))
        kv = split(kv, 2)
        qh = split(_glinear(q, p(pre + "xattn.q.weight"), p(pre + "xattn.q.bias")), 1)[0]
        q = q + merge(_gattend(qh, kv[0], kv[1], mask))
        q = q + mlp(_gnorm(q, p(pre + "norm2.weight"), p(pre + "norm2.bias")), pre + "mlp.")
        if pooler.layout == "jepa":
            for i in range(depth):
                q = block(q, i, None)
        return _glinear(q[:, :, 0], p("linear.weight"), p("linear.bias"))


def temporal_pos_embed(positions: np.ndarray, dim: int) -> np.ndarray:
    """float64 [..., dim]: jepa's 1-D sin-cos embedding (`get_1d_sincos_pos_embed`, src/models/utils/
    pos_embs.py: sines then cosines of pos / 10000^(2i/dim)) at integer `positions`; cast to the
    tokens' float32 where it is added, as `ClipAggregation` casts its table (`.float()`)."""
    from vidcache.models.vit import _sincos_1d

    p = np.asarray(positions)
    table = _sincos_1d(dim, torch.from_numpy(p.reshape(-1).astype(np.float64)))
    return table.numpy().reshape(*p.shape, dim)


def segments_per_view(data: ProbeData, pos_embed: bool = False) -> ProbeData:
    """jepa's `attend_across_segments` on a clip store: the tokens of the T temporal segments of each
    spatial view concatenated into one sequence, giving S samples of T*L tokens per video.

    Store clips are temporal-major (clip t * S + s), S from the store's `TxS` protocol
    (`data.spatial`). The softmax is then averaged over the S spatial views, as jepa's
    `run_one_epoch` does (evals/video_classification_frozen/eval.py with utils.py: ClipAggregation).

    `pos_embed` adds `ClipAggregation`'s `use_pos_embed` term: every token gets the sin-cos
    embedding of its temporal token's frame number (`data.extras["frame_pos"]` [n, C, t], from
    `load_split(..., positions=True)`), the same for the L / t spatial tokens of one time step
    (tokens are (t, h, w)-ordered). jepa re-subsamples `clip_indices` inside its loop over spatial
    views, so with more than one eval view its code fails on a shape mismatch; here every view gets
    its own clips' positions.
    """
    from dataclasses import replace

    from vidcache.errors import DataError

    if not data.is_tokens:
        raise DataError(f"{data._name}: sample=segments needs stored tokens [n, C, L, D]")
    n, c, l, d = data.x.shape
    s = data.spatial
    if s < 1 or c % s:
        raise DataError(f"{data._name}: {c} clips per video do not split into {s} spatial views")
    t = c // s

    def regroup(a: np.ndarray) -> np.ndarray:  # [n, T*S, L, ...] -> [n, S, T*L, ...]
        a = a.reshape(n, t, s, *a.shape[2:]).swapaxes(1, 2)
        return a.reshape(n, s, t * a.shape[3], *a.shape[4:])

    x = data.x
    if pos_embed:
        if "frame_pos" not in data.extras:
            raise DataError(f"{data._name}: pos_embed needs the frame number of every token; load the split "
                            f"with load_split(..., positions=True)")
        pos = data.extras["frame_pos"]  # [n, C, t]
        if l % pos.shape[-1]:
            raise DataError(f"{data._name}: {l} tokens per clip do not split into {pos.shape[-1]} time steps")
        pe = temporal_pos_embed(pos, d)  # [n, C, t, D] float64
        pe = np.repeat(pe, l // pos.shape[-1], axis=2)  # each time step's spatial tokens
        x = x.astype(np.float64 if x.dtype == np.float64 else np.float32) + pe.astype(
            np.float64 if x.dtype == np.float64 else np.float32)
    mask = None if data.mask is None else regroup(data.mask)
    return replace(data, x=regroup(x), mask=mask, extras={}, spatial=1)


class AttentiveProbe(GridProbe):
    name = "attentive"
    Config = AttentiveConfig
    arrays = ("tokens",)

    def prepare(self, data: ProbeData) -> ProbeData:
        return segments_per_view(data, self.cfg.pos_embed) if self.cfg.sample == "segments" else data

    def make_head(self, dim: int, num_classes: int) -> nn.Module:
        return AttentiveHead(dim, self.cfg.num_heads, self.cfg.mlp_ratio, self.cfg.depth, num_classes=num_classes,
                             layout=self.cfg.layout)
