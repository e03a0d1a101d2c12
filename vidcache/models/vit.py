"""A plain video Vision Transformer, parameter-compatible with facebookresearch/jepa.

Parameter names and shapes follow jepa's `src/models/vision_transformer.py`, so its checkpoints load
strictly: `patch_embed.proj` (Conv3d over tubelet x patch x patch, or Conv2d when `num_frames == 1`),
`pos_embed` (a fixed sin-cos table `[1, N, D]`, a parameter that takes no gradient),
`blocks.{i}.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}` and the final `norm`.

`forward(x, masks)` returns every token after the final norm; `masks` keeps only the given token
indices after the position embedding is added (V-JEPA's context encoder sees only its context).

Two options serve per-frame encoders (TDV, `vidcache.pretrain.tdv`), both off by default so jepa
checkpoints keep their exact layout:
- `cls_token`: a learnable class token prepended to the patch tokens of an image ViT (DINOv2 style:
  `forward` returns `[B, 1 + N, D]`, the class token first; it takes no position embedding);
- `condition_dim`: every block also cross-attends to a condition `[B, M, condition_dim]`
  (`forward(x, condition=...)`), as the motion encoder of TDV attends to the frame encoder's tokens
  (ninaddaithankar/tdv, `model/cv/dinov2_with_cross_attention/layers/block.py`:
  x + self_attn(norm1 x), then x + cross_attn(norm x, condition), then x + mlp(norm2 x)).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _sincos_1d(dim: int, pos: Tensor) -> Tensor:
    """[M] positions -> [M, dim]: sines of all frequencies, then cosines (MAE / jepa layout)."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even width, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000 ** omega
    out = pos.reshape(-1, 1).double() * omega[None]
    return torch.cat([out.sin(), out.cos()], dim=1)


def get_2d_sincos_pos_embed(embed_dim: int, grid_h: int, grid_w: int | None = None) -> Tensor:
    """Fixed 2D position table `[grid_h * grid_w, embed_dim]`, rows in (h, w) order."""
    grid_w = grid_h if grid_w is None else grid_w
    h, w = torch.meshgrid(torch.arange(grid_h, dtype=torch.float64),
                          torch.arange(grid_w, dtype=torch.float64), indexing="ij")
    return torch.cat([_sincos_1d(embed_dim // 2, h), _sincos_1d(embed_dim // 2, w)], dim=1)


def get_3d_sincos_pos_embed(embed_dim: int, grid_size: int, grid_depth: int,
                            uniform_power: bool = False) -> Tensor:
    """Fixed 3D position table `[grid_depth * grid_size**2, embed_dim]`, rows in (t, h, w) order.

    By default time gets half the channels and height / width a quarter each (jepa's default);
    `uniform_power` splits them evenly, rounding up and truncating to `embed_dim`.
    """
    t, h, w = torch.meshgrid(torch.arange(grid_depth, dtype=torch.float64),
                             torch.arange(grid_size, dtype=torch.float64),
                             torch.arange(grid_size, dtype=torch.float64), indexing="ij")
    if uniform_power:
        dim_t = dim_h = dim_w = int(math.ceil(embed_dim / 6) * 2)
    else:
        dim_t, dim_h, dim_w = embed_dim // 2, embed_dim // 4, embed_dim // 4
    emb = torch.cat([_sincos_1d(dim_t, t), _sincos_1d(dim_h, h), _sincos_1d(dim_w, w)], dim=1)
    return emb[:, :embed_dim]


class PatchEmbed(nn.Module):
    """Non-overlapping patches (Conv2d) or tubelets (Conv3d) -> tokens `[B, N, D]`."""

    def __init__(self, patch_size: int = 16, tubelet_size: int | None = 2, in_chans: int = 3,
                 embed_dim: int = 768):
        super().__init__()
        if tubelet_size is None:
            self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        else:
            kernel = (tubelet_size, patch_size, patch_size)
            self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=kernel, stride=kernel)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor) -> Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, N, C)))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class CrossAttention(nn.Module):
    """Queries from the tokens, keys and values from a condition of another width."""

    def __init__(self, dim: int, kv_dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(kv_dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        B, N, C = x.shape
        M = condition.shape[1]
        h = self.num_heads
        q = self.q(x).reshape(B, N, h, C // h).transpose(1, 2)
        k, v = self.kv(condition).reshape(B, M, 2, h, C // h).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x)).

    With `condition_dim`, a cross-attention step sits between the two: x + cross(norm(x), condition).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, condition_dim: int | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)
        if condition_dim is not None:
            self.norm_cross = nn.LayerNorm(dim, eps=1e-6)
            self.cross_attn = CrossAttention(dim, condition_dim, num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLP(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.norm1(x))
        if condition is not None:
            x = x + self.cross_attn(self.norm_cross(x), condition)
        return x + self.mlp(self.norm2(x))


def apply_masks(x: Tensor, masks: Sequence[Tensor]) -> Tensor:
    """Keep the token indices of each mask `[B, K]`; several masks are stacked along the batch."""
    return torch.cat([torch.gather(x, 1, m.unsqueeze(-1).expand(-1, -1, x.size(-1))) for m in masks])


class VisionTransformer(nn.Module):
    """Video ViT (`num_frames > 1`, tubelet patches) or image ViT (`num_frames == 1`).

    Keyword names follow jepa, so `VisionTransformer(**model.config)` rebuilds the architecture.
    """

    def __init__(self, img_size: int = 224, patch_size: int = 16, num_frames: int = 1,
                 tubelet_size: int = 2, in_chans: int = 3, embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0, init_std: float = 0.02,
                 uniform_power: bool = False, cls_token: bool = False, condition_dim: int | None = None):
        super().__init__()
        self.config: dict[str, Any] = dict(
            img_size=img_size, patch_size=patch_size, num_frames=num_frames, tubelet_size=tubelet_size,
            in_chans=in_chans, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
            mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
            init_std=init_std, uniform_power=uniform_power)
        # Recorded only when set, so configs (and checkpoints) of plain ViTs are unchanged.
        if cls_token:
            self.config["cls_token"] = True
        if condition_dim is not None:
            self.config["condition_dim"] = int(condition_dim)
        self.img_size, self.patch_size = img_size, patch_size
        self.num_frames, self.tubelet_size = num_frames, tubelet_size
        self.embed_dim, self.num_heads, self.init_std = embed_dim, num_heads, init_std
        self.uniform_power = uniform_power
        self.is_video = num_frames > 1
        if self.is_video and num_frames % tubelet_size:
            raise ValueError(f"num_frames {num_frames} is not a multiple of tubelet_size {tubelet_size}")
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        if cls_token and self.is_video:
            raise ValueError("cls_token is for image ViTs (num_frames == 1)")
        self.grid_size = img_size // patch_size
        self.grid_depth = num_frames // tubelet_size if self.is_video else 1
        self.num_prefix_tokens = 1 if cls_token else 0
        self.condition_dim = condition_dim

        self.patch_embed = PatchEmbed(patch_size, tubelet_size if self.is_video else None, in_chans, embed_dim)
        self.num_patches = self.grid_depth * self.grid_size ** 2
        # A parameter (not a buffer) that takes no gradient: jepa stores it this way, so its
        # checkpoints, and optimizers that filter on requires_grad, see the same tensors.
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches, embed_dim), requires_grad=False)
        if cls_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop=drop_rate, attn_drop=attn_drop_rate,
                  condition_dim=condition_dim)
            for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """jepa's init: sin-cos positions, truncated-normal weights, residual outputs scaled by depth.

        With a seeded CPU generator the result is identical in every process.
        """
        if self.is_video:
            table = get_3d_sincos_pos_embed(self.embed_dim, self.grid_size, self.grid_depth, self.uniform_power)
        else:
            table = get_2d_sincos_pos_embed(self.embed_dim, self.grid_size)
        self.pos_embed.copy_(table.float().unsqueeze(0))
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d, nn.Conv3d)):
                w = torch.empty(m.weight.shape)
                nn.init.trunc_normal_(w, std=self.init_std, generator=generator)
                m.weight.copy_(w)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.LayerNorm):
                m.weight.fill_(1.0)
                m.bias.zero_()
        if self.num_prefix_tokens:  # DINOv2 draws its class token from N(0, 1e-6)
            self.cls_token.copy_(torch.randn(self.cls_token.shape, generator=generator) * 1e-6)
        # Each residual branch's output projection is divided by sqrt(2 * layer) so the residual
        # stream's variance does not grow with depth.
        for i, blk in enumerate(self.blocks, start=1):
            blk.attn.proj.weight.div_(math.sqrt(2.0 * i))
            blk.mlp.fc2.weight.div_(math.sqrt(2.0 * i))
            if self.condition_dim is not None:
                blk.cross_attn.proj.weight.div_(math.sqrt(2.0 * i))

    def interpolate_pos_encoding(self, x: Tensor) -> Tensor:
        """The position table resized to the input's token grid (trilinear in time and space)."""
        pos = self.pos_embed
        D = pos.shape[-1]
        if self.is_video:
            T, H, W = x.shape[-3:]
            if (T, H, W) == (self.num_frames, self.img_size, self.img_size):
                return pos
            size = (T // self.tubelet_size, H // self.patch_size, W // self.patch_size)
            grid = pos.reshape(1, self.grid_depth, self.grid_size, self.grid_size, D).permute(0, 4, 1, 2, 3)
            grid = F.interpolate(grid, size=size, mode="trilinear", align_corners=False)
            return grid.permute(0, 2, 3, 4, 1).reshape(1, -1, D)
        H, W = x.shape[-2:]
        if (H, W) == (self.img_size, self.img_size):
            return pos
        size = (H // self.patch_size, W // self.patch_size)
        grid = pos.reshape(1, self.grid_size, self.grid_size, D).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=size, mode="bicubic", align_corners=False)
        return grid.permute(0, 2, 3, 1).reshape(1, -1, D)

    def forward(self, x: Tensor, masks: Tensor | Sequence[Tensor] | None = None,
                condition: Tensor | None = None) -> Tensor:
        """`x` [B, C, T, H, W] (video) or [B, C, H, W] (image) -> tokens [B, N, D] after the final norm.

        `masks`: LongTensor [B, K] of token indices to keep, or a list of them (the outputs of the
        masks are stacked along the batch, as in jepa). With `cls_token` the class token comes first
        ([B, 1 + N, D]); with `condition_dim`, `condition` [B, M, condition_dim] is required.
        """
        return self.forward_last_blocks(x, 1, masks, condition)[0]

    def forward_last_blocks(self, x: Tensor, n: int, masks: Tensor | Sequence[Tensor] | None = None,
                            condition: Tensor | None = None) -> list[Tensor]:
        """The outputs of the last `n` blocks, oldest first, each after the final norm (`forward`'s
        result is the last of them), as DINOv2's `get_intermediate_layers(norm=True)`."""
        if (condition is None) != (self.condition_dim is None):
            raise ValueError("a condition is required by, and only accepted by, a ViT built with condition_dim")
        want = 5 if self.is_video else 4
        if x.dim() != want:
            raise ValueError(f"{'video' if self.is_video else 'image'} ViT expects a {want}-D input, "
                             f"got shape {tuple(x.shape)}")
        if not 1 <= n <= len(self.blocks):
            raise ValueError(f"n must be between 1 and the {len(self.blocks)} blocks, got {n}")
        pos = self.interpolate_pos_encoding(x)
        x = self.patch_embed(x) + pos.to(x.dtype)
        if masks is not None:
            x = apply_masks(x, [masks] if isinstance(masks, Tensor) else masks)
        if self.num_prefix_tokens:
            x = torch.cat([self.cls_token.to(x.dtype).expand(x.shape[0], -1, -1), x], dim=1)
        if condition is not None and condition.shape[0] != x.shape[0]:
            condition = condition.repeat(x.shape[0] // condition.shape[0], 1, 1)  # one per stacked mask
        outs = []
        for i, blk in enumerate(self.blocks):
            x = blk(x, condition)
            if i >= len(self.blocks) - n:
                outs.append(self.norm(x))
        return outs


VIT_SIZES: dict[str, dict[str, Any]] = {
    "vit_micro": dict(embed_dim=96, depth=4, num_heads=3, mlp_ratio=4.0),
    "vit_tiny": dict(embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0),
    "vit_small": dict(embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0),
    "vit_base": dict(embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0),
    "vit_large": dict(embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4.0),
    "vit_huge": dict(embed_dim=1280, depth=32, num_heads=16, mlp_ratio=4.0),
    "vit_giant": dict(embed_dim=1408, depth=40, num_heads=16, mlp_ratio=48 / 11),
}


def vit_from_size(size: str, **kwargs: Any) -> VisionTransformer:
    """A VisionTransformer of a named size; kwargs override the size's defaults."""
    if size not in VIT_SIZES:
        raise ValueError(f"unknown ViT size {size!r} (known: {', '.join(VIT_SIZES)})")
    return VisionTransformer(**{**VIT_SIZES[size], **kwargs})


def vit_micro(**kwargs: Any) -> VisionTransformer:
    return vit_from_size("vit_micro", **kwargs)


def vit_tiny(**kwargs: Any) -> VisionTransformer:
    return vit_from_size("vit_tiny", **kwargs)


def vit_small(**kwargs: Any) -> VisionTransformer:
    return vit_from_size("vit_small", **kwargs)


def vit_base(**kwargs: Any) -> VisionTransformer:
    return vit_from_size("vit_base", **kwargs)


def vit_large(**kwargs: Any) -> VisionTransformer:
    return vit_from_size("vit_large", **kwargs)


def vit_huge(**kwargs: Any) -> VisionTransformer:
    return vit_from_size("vit_huge", **kwargs)


def vit_giant(**kwargs: Any) -> VisionTransformer:
    return vit_from_size("vit_giant", **kwargs)
