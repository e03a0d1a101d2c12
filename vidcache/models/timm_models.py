"""`timm:<name>[@<weights file>]`: timm image models run per frame.

    create_backbone("timm:vit_small_patch14_dinov2.lvd142m")          # timm's pretrained weights
    create_backbone("timm:vit_base_patch16_224@/models/vit_b16.pth")  # local weights, loaded strictly

Tokens are `forward_features` outputs without prefix (class / register) tokens; convolutional
models give their last feature map flattened in (h, w) order. Mean, std and input size come from
the model's pretrained config.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from vidcache.errors import VidcacheError
from vidcache.models.backbone import FrameBackbone
from vidcache.models.checkpoint import load_checkpoint, load_state_dict_strict, strip_prefixes
from vidcache.models.registry import register_prefix


class TimmFrameBackbone(FrameBackbone):
    def __init__(self, model: nn.Module, spec: dict[str, Any]):
        super().__init__()
        self.model = model
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 0) or 0)
        self.channels_last_out = str(getattr(model, "output_fmt", "NCHW")) == "NHWC"
        self._grids: dict[tuple[int, int], tuple[int, int]] = {}
        # ViTs with a class token: timm's get_intermediate_layers gives the normed CLS of any block
        self.has_cls = (getattr(model, "cls_token", None) is not None and self.num_prefix_tokens > 0
                        and hasattr(model, "get_intermediate_layers"))
        self.set_input_spec(**spec)

    def encode_frames(self, frames: Tensor) -> Tensor:
        out = self.model.forward_features(frames)
        if out.dim() == 4:  # a feature map
            out = out.flatten(1, 2) if self.channels_last_out else out.flatten(2).transpose(1, 2)
        elif out.dim() == 3:
            out = out[:, self.num_prefix_tokens:]
        else:
            raise VidcacheError(f"timm model returned features of shape {tuple(out.shape)}; "
                                "expected tokens [N, L, D] or a feature map")
        return out

    def encode_frames_with_cls(self, frames: Tensor, blocks: int) -> tuple[Tensor, Tensor]:
        if not self.has_cls:
            return super().encode_frames_with_cls(frames, blocks)
        outs = self.model.get_intermediate_layers(frames, n=blocks, return_prefix_tokens=True, norm=True)
        # the last block's normed patch tokens are forward_features' (without its prefix tokens)
        return outs[-1][0], torch.stack([prefix[:, 0] for _, prefix in outs], dim=1)

    def token_grid(self, T: int, H: int, W: int) -> tuple[int, int, int]:
        # Convolutional stems pad, so the map size is not always H // stride: measure it once.
        if (H, W) not in self._grids:
            p = next(self.model.parameters())
            with torch.no_grad():
                out = self.model.forward_features(torch.zeros(1, 3, H, W, device=p.device, dtype=p.dtype))
            if out.dim() == 4:
                grid = (out.shape[1], out.shape[2]) if self.channels_last_out else (out.shape[2], out.shape[3])
            else:
                n = out.shape[1] - self.num_prefix_tokens
                gh, gw = H // self.patch_size, W // self.patch_size
                grid = (gh, gw) if gh * gw == n else (1, n)
            self._grids[(H, W)] = (int(grid[0]), int(grid[1]))
        return (T, *self._grids[(H, W)])


def _state_dict_of(obj: Any, path: str) -> dict:
    if isinstance(obj, Mapping):
        for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                return strip_prefixes(obj[key], ("module.",))
        if any(isinstance(v, Tensor) for v in obj.values()):
            return strip_prefixes(obj, ("module.",))
    raise VidcacheError(f"{path} holds no state dict (expected tensors, or a dict with 'state_dict' or 'model')")


@register_prefix("timm", "timm:<model name>[@<weights file>]")
def load_timm(spec: str, *, checkpoint: str | None = None, pretrained: bool | None = None,
              num_frames: int = 8, frame_stride: int = 4, image_size: int | None = None,
              mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
              trust_checkpoint: bool = False, **model_kwargs: Any) -> FrameBackbone:
    """A timm model; weights from `@<file>` / `checkpoint` (strict), or timm's pretrained weights.

    `pretrained` defaults to True when no weights file is given. Other options go to
    `timm.create_model` (e.g. `img_size=`, `dynamic_img_size=True`).
    """
    try:
        import timm
        from timm.data import resolve_model_data_config
    except ImportError as err:
        raise VidcacheError("the 'timm:' backbones need timm: pip install 'vidcache[hub]'") from err
    name, _, file = spec.partition("@")
    if file and checkpoint and file != checkpoint:
        raise VidcacheError(f"timm:{spec} names weights twice ({file} and checkpoint={checkpoint}); keep one")
    file = file or checkpoint
    if pretrained is None:
        pretrained = not file
    if not timm.is_model(name):
        import difflib
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else " (see timm.list_models())"
        raise VidcacheError(f"timm has no model {name!r}{hint}")
    try:
        model = timm.create_model(name, pretrained=bool(pretrained) and not file, **model_kwargs)
    except TypeError as err:
        raise VidcacheError(f"timm model {name!r} does not take these options: {err}") from err
    except Exception as err:  # hub / network errors come in many types
        if pretrained and not file:
            raise VidcacheError(f"cannot fetch pretrained weights for timm:{name} ({str(err).splitlines()[0]}); "
                                f"give a local file with timm:{name}@<file>, or pretrained=False") from err
        raise
    if file:
        load_state_dict_strict(model, _state_dict_of(load_checkpoint(file, trust=trust_checkpoint), file), file)
    model = model.float().eval()

    data = resolve_model_data_config(model)
    native = getattr(getattr(model, "patch_embed", None), "img_size", None)
    size = image_size or (native[0] if isinstance(native, (list, tuple)) else native) or data["input_size"][-1]
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if patch is None:
        info = getattr(model, "feature_info", None)
        patch = info[-1]["reduction"] if info else 32
    patch = patch[0] if isinstance(patch, (list, tuple)) else patch
    return TimmFrameBackbone(model, dict(
        embed_dim=int(model.num_features), num_frames=num_frames, image_size=int(size), patch_size=int(patch),
        tubelet_size=1, frame_stride=frame_stride, mean=mean or data["mean"], std=std or data["std"]))
