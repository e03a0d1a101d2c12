"""Backbones: one interface, one registry, and the video ViT shared by several stages.

    from vidcache.models import create_backbone, list_backbones
    model = create_backbone("tiny", seed=0)      # or "hf:...", "timm:...", "vjepa:...", "vidcache:..."
    tokens = model.forward_features(clip)        # [B, 3, T, H, W] normalised -> [B, L, D]
    emb = model.pool(tokens)                     # [B, D]
"""

from vidcache.models.backbone import IMAGENET_MEAN, IMAGENET_STD, Backbone, FrameBackbone, weights_digest
from vidcache.models.checkpoint import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    load_state_dict_strict,
    make_checkpoint,
    read_vidcache_checkpoint,
    save_checkpoint_atomic,
)
from vidcache.models.flops import count_flops
from vidcache.models.registry import (
    backbone_problems,
    create_backbone,
    is_backbone,
    list_backbones,
    list_prefixes,
    register_backbone,
    register_prefix,
)
from vidcache.models.vit import VIT_SIZES, VisionTransformer, vit_from_size

__all__ = [
    "Backbone", "FrameBackbone", "IMAGENET_MEAN", "IMAGENET_STD", "weights_digest",
    "CHECKPOINT_FORMAT", "load_checkpoint", "load_state_dict_strict", "make_checkpoint",
    "read_vidcache_checkpoint", "save_checkpoint_atomic", "count_flops",
    "backbone_problems", "create_backbone", "is_backbone", "list_backbones", "list_prefixes", "register_backbone",
    "register_prefix",
    "VIT_SIZES", "VisionTransformer", "vit_from_size",
]
