"""`hf:<hub id or local dir>`: Hugging Face video models and per-frame image models.

Video models (one forward per clip): VideoMAE (`videomae`) and V-JEPA 2 (`vjepa2`).
Image models (one forward per frame, patch tokens concatenated in time order): DINOv2 (with or
without registers), CLIP vision and SigLIP vision. Class / register tokens are dropped so tokens
form the (t, h, w) grid `token_grid` describes.

The architecture is chosen from `AutoConfig`'s `model_type`; normalisation and crop size come from
the saved image / video processor config when there is one, else from the model config and the
model family's published defaults.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from vidcache.errors import VidcacheError
from vidcache.models.backbone import IMAGENET_MEAN, IMAGENET_STD, Backbone, FrameBackbone, check_video
from vidcache.models.registry import register_prefix

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)

# model_type -> (transformers class name, video?, default mean, default std)
_FAMILIES: dict[str, tuple[str, bool, tuple, tuple]] = {
    "videomae": ("VideoMAEModel", True, IMAGENET_MEAN, IMAGENET_STD),
    "vjepa2": ("VJEPA2Model", True, IMAGENET_MEAN, IMAGENET_STD),
    "dinov2": ("Dinov2Model", False, IMAGENET_MEAN, IMAGENET_STD),
    "dinov2_with_registers": ("Dinov2WithRegistersModel", False, IMAGENET_MEAN, IMAGENET_STD),
    "clip": ("CLIPVisionModel", False, CLIP_MEAN, CLIP_STD),
    "clip_vision_model": ("CLIPVisionModel", False, CLIP_MEAN, CLIP_STD),
    "siglip": ("SiglipVisionModel", False, HALF, HALF),
    "siglip_vision_model": ("SiglipVisionModel", False, HALF, HALF),
}


def _hub_offline() -> bool:
    try:
        from huggingface_hub import constants
    except ImportError:
        return True
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def _processor_config(source: str, revision: str | None) -> dict:
    """The saved image / video processor config, or {} when there is none (or it cannot be fetched)."""
    names = ("preprocessor_config.json", "video_preprocessor_config.json")
    if os.path.isdir(source):
        for name in names:
            file = Path(source) / name
            if file.is_file():
                return json.loads(file.read_text())
        return {}
    try:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache
    except ImportError:
        return {}
    for name in names:
        cached = try_to_load_from_cache(source, name, revision=revision)
        if isinstance(cached, str):
            return json.loads(Path(cached).read_text())
    if _hub_offline():
        return {}
    for name in names:
        try:
            return json.loads(Path(hf_hub_download(source, name, revision=revision)).read_text())
        except Exception:  # absent file or unreachable hub: fall back to the model's defaults
            continue
    return {}


def _size_from(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        for key in ("height", "shortest_edge", "width"):
            if isinstance(value.get(key), int):
                return value[key]
    return None


def _vision_config(config: Any) -> Any:
    return getattr(config, "vision_config", None) or config


class HFVideoBackbone(Backbone):
    """VideoMAE / V-JEPA 2: a clip `[B, 3, T, H, W]` goes through the model whole."""

    def __init__(self, model: nn.Module, model_type: str, spec: dict[str, Any]):
        super().__init__()
        self.model = model
        self.model_type = model_type
        self.set_input_spec(**spec)

    def forward_features(self, video: Tensor) -> Tensor:
        check_video(video)
        frames_first = video.transpose(1, 2)  # transformers takes [B, T, C, H, W]
        if self.model_type == "vjepa2":
            return self.model(pixel_values_videos=frames_first, skip_predictor=True).last_hidden_state
        # VideoMAE's sin-cos table is built for one input size and is not interpolated.
        T, H, W = video.shape[2:]
        if (T, H, W) != (self.num_frames, self.image_size, self.image_size):
            raise VidcacheError(f"VideoMAE takes clips of {self.num_frames} x {self.image_size} x "
                                f"{self.image_size}; got {T} x {H} x {W} (leave clip length and size at the defaults)")
        return self.model(pixel_values=frames_first).last_hidden_state


class HFImageBackbone(FrameBackbone):
    """DINOv2 / CLIP / SigLIP vision towers, run per frame; prefix tokens are dropped."""

    def __init__(self, model: nn.Module, model_type: str, num_prefix_tokens: int, native_size: int,
                 spec: dict[str, Any]):
        super().__init__()
        self.model = model
        self.model_type = model_type
        self.num_prefix_tokens = num_prefix_tokens
        self.native_size = native_size
        # DINOv2's CLS of any block is its hidden state through the final layernorm (as its
        # get_intermediate_layers(norm=True) gives); CLIP's and SigLIP's are not used here.
        self.has_cls = model_type.startswith("dinov2") and hasattr(model, "layernorm")
        self.set_input_spec(**spec)

    def encode_frames(self, frames: Tensor) -> Tensor:
        kwargs = {}
        # DINOv2 always interpolates its position table; CLIP and SigLIP only when asked.
        if not self.model_type.startswith("dinov2"):
            if tuple(frames.shape[-2:]) != (self.native_size, self.native_size):
                kwargs["interpolate_pos_encoding"] = True
        out = self.model(pixel_values=frames, **kwargs).last_hidden_state
        return out[:, self.num_prefix_tokens:]

    def encode_frames_with_cls(self, frames: Tensor, blocks: int) -> tuple[Tensor, Tensor]:
        if not self.has_cls:
            return super().encode_frames_with_cls(frames, blocks)
        res = self.model(pixel_values=frames, output_hidden_states=True)
        hidden = res.hidden_states[-blocks:]  # the outputs of the last `blocks` layers, before the norm
        cls = torch.stack([self.model.layernorm(h[:, 0]) for h in hidden], dim=1)
        return res.last_hidden_state[:, self.num_prefix_tokens:], cls


@register_prefix("hf", "hf:<hub id or local dir>")
def load_hf(source: str, *, num_frames: int | None = None, frame_stride: int | None = None,
            image_size: int | None = None, mean: Sequence[float] | None = None,
            std: Sequence[float] | None = None, revision: str | None = None) -> Backbone:
    """A transformers model from a local `save_pretrained` folder or a hub id (cached or online).

    Image models default to 8 frames at stride 4 per clip; video models to the frame count they
    were trained with and stride 4. All weights are cast to float32.
    """
    try:
        import transformers
        from transformers import AutoConfig
    except ImportError as err:
        raise VidcacheError("the 'hf:' backbones need transformers: pip install 'vidcache[hub]'") from err
    kw = {"revision": revision} if revision else {}
    # Something that looks like a path is never sent to the hub as a repo id.
    if source.startswith(("/", ".", "~")) or os.path.exists(source):
        source = os.path.expanduser(source)
        if not os.path.isdir(source):
            raise VidcacheError(f"Hugging Face model folder {source} does not exist (make one with save_pretrained)")
    try:
        config = AutoConfig.from_pretrained(source, **kw)
    except (OSError, ValueError) as err:
        hint = ("the hub is offline (HF_HUB_OFFLINE), so only cached or local models load; give a local "
                "folder made with save_pretrained, or unset HF_HUB_OFFLINE" if _hub_offline()
                else "give a local folder made with save_pretrained or a valid hub id")
        raise VidcacheError(f"cannot load Hugging Face model {source!r}: {str(err).splitlines()[0]} ({hint})") from err
    model_type = config.model_type
    if model_type not in _FAMILIES:
        raise VidcacheError(f"Hugging Face model type {model_type!r} of {source!r} is not supported "
                            f"(supported: {', '.join(sorted(_FAMILIES))})")
    cls_name, is_video, family_mean, family_std = _FAMILIES[model_type]
    cls = getattr(transformers, cls_name, None)
    if cls is None:
        raise VidcacheError(f"the installed transformers {transformers.__version__} has no {cls_name}; "
                            "upgrade transformers to load this model")
    try:
        model = cls.from_pretrained(source, **kw)
    except (OSError, ValueError) as err:
        raise VidcacheError(f"cannot load weights of {source!r}: {str(err).splitlines()[0]}") from err
    model = model.float().eval()

    proc = _processor_config(source, revision)
    vcfg = _vision_config(config)
    native = int(getattr(vcfg, "crop_size", None) or getattr(vcfg, "image_size"))
    size = image_size or _size_from(proc.get("crop_size")) or _size_from(proc.get("size")) or native
    patch = getattr(vcfg, "patch_size")
    patch = int(patch[0] if isinstance(patch, (list, tuple)) else patch)
    spec = dict(embed_dim=int(vcfg.hidden_size), image_size=int(size), patch_size=patch,
                mean=mean or proc.get("image_mean") or family_mean,
                std=std or proc.get("image_std") or family_std,
                frame_stride=frame_stride or 4)
    if is_video:
        trained_frames = int(getattr(vcfg, "num_frames", None) or getattr(vcfg, "frames_per_clip"))
        if model_type == "videomae":
            if (image_size or native) != native or (num_frames or trained_frames) != trained_frames:
                raise VidcacheError(f"VideoMAE {source!r} only takes {trained_frames} frames of {native}x{native} "
                                    "(its position table is fixed); drop the num_frames / image_size options")
            spec["image_size"] = native
        spec.update(num_frames=num_frames or trained_frames, tubelet_size=int(vcfg.tubelet_size))
        return HFVideoBackbone(model, model_type, spec)
    if model_type.startswith("dinov2"):
        prefix = 1 + int(getattr(vcfg, "num_register_tokens", 0) or 0)
    elif model_type.startswith("clip"):
        prefix = 1
    else:
        prefix = 0
    spec.update(num_frames=num_frames or 8, tubelet_size=1)
    return HFImageBackbone(model, model_type, prefix, native, spec)
