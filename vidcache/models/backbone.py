"""The one interface every feature extractor implements.

A backbone takes a normalised clip `[B, 3, T, H, W]` and returns tokens `[B, L, D]` laid out as a
`(t, h, w)` grid flattened in that order (`token_grid` says its size), so callers can pool tokens to
a coarser grid or to one vector. Its attributes describe what input it expects, so the extractor
can sample, resize and normalise without knowing which model it runs:

- `num_frames`, `frame_stride`: clip length and the default stride between sampled frames;
- `image_size`: the square crop side; `patch_size`, `tubelet_size`: pixels / frames per token;
- `mean`, `std`: per-channel normalisation applied to RGB in [0, 1];
- `name`: the registry name the model was created with.

Image models run per frame (`FrameBackbone`): each frame is encoded alone and the per-frame tokens
are concatenated along L in time order, the V-JEPA protocol for evaluating image models on video.
"""

from __future__ import annotations

import abc
import hashlib
from typing import Any

import torch
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _digest_key(state: dict[str, Tensor]) -> tuple | None:
    # `_version` counts in-place writes (optimizer steps, load_state_dict, fill_), and data_ptr
    # changes when a tensor is replaced, so an unchanged key means unchanged weights.
    try:
        return tuple((k, t.data_ptr(), t._version, t.dtype, tuple(t.shape), str(t.device))
                     for k, t in state.items())
    except RuntimeError:  # inference-mode tensors keep no version counter: never cache those
        return None


def weights_digest(module: nn.Module) -> str:
    """sha256 over the state dict: every key, dtype, shape and the raw bytes, in key order.

    Two modules with equal digests produce equal outputs, whatever device they sit on. The digest
    is cached on the module and recomputed only after a weight is modified or replaced.
    """
    state = module.state_dict(keep_vars=True)
    key = _digest_key(state)
    cached = module.__dict__.get("_vidcache_digest")
    if key is not None and cached is not None and cached[0] == key:
        return cached[1]
    h = hashlib.sha256()
    for name, t in state.items():
        t = t.detach()
        h.update(f"{name}|{str(t.dtype).removeprefix('torch.')}|{tuple(t.shape)}|".encode())
        # Viewing as bytes covers dtypes numpy lacks (bfloat16, float8).
        flat = t.to("cpu").contiguous().reshape(-1)
        if flat.numel():
            h.update(flat.view(torch.uint8).numpy())
    digest = h.hexdigest()
    module.__dict__["_vidcache_digest"] = (key, digest)
    return digest


def check_video(video: Tensor, channels: int = 3) -> None:
    if video.dim() != 5 or video.shape[1] != channels:
        raise ValueError(f"expected a clip batch [B, {channels}, T, H, W], got shape {tuple(video.shape)}")


class Backbone(nn.Module, abc.ABC):
    """A frozen video feature extractor: clip `[B, 3, T, H, W]` -> tokens `[B, L, D]`."""

    name: str = ""
    embed_dim: int = 0
    num_frames: int = 1
    frame_stride: int = 1
    image_size: int = 224
    patch_size: int = 16
    tubelet_size: int = 1
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    has_cls: bool = False  # a CLS token (features cls, cls+avgpool, lastN); VideoMAE and V-JEPA have none
    per_frame: bool = False  # an image model run on each frame

    def set_input_spec(self, *, embed_dim: int, num_frames: int, image_size: int, patch_size: int,
                       tubelet_size: int, frame_stride: int = 1, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                       name: str = "") -> None:
        """Record what the model expects; called once by each backbone's constructor."""
        self.embed_dim = int(embed_dim)
        self.num_frames = int(num_frames)
        self.image_size = int(image_size)
        self.patch_size = int(patch_size)
        self.tubelet_size = int(tubelet_size)
        self.frame_stride = int(frame_stride)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.name = name

    @abc.abstractmethod
    def forward_features(self, video: Tensor) -> Tensor:
        """Normalised clips `[B, 3, T, H, W]` -> tokens `[B, L, D]` in (t, h, w) order."""

    def pool(self, tokens: Tensor) -> Tensor:
        """Tokens `[B, L, D]` -> one embedding per clip `[B, D]` (mean over tokens)."""
        return tokens.mean(dim=1)

    def forward(self, video: Tensor) -> Tensor:
        return self.pool(self.forward_features(video))

    def forward_with_cls(self, video: Tensor, blocks: int) -> tuple[Tensor, Tensor]:
        """(the tokens of `forward_features` [B, L, D], the normed CLS tokens of the last `blocks`
        blocks [B, blocks, D]) from one forward; only backbones with `has_cls`."""
        from vidcache.errors import ConfigError

        raise ConfigError([f"{self.name or type(self).__name__} has no CLS token; its stored feature is "
                           f"'mean' (use --features mean)"], "features")

    def token_grid(self, T: int, H: int, W: int) -> tuple[int, int, int]:
        """Size (t, h, w) of the token grid for a `T x H x W` clip; t*h*w equals L."""
        return max(T // self.tubelet_size, 1), H // self.patch_size, W // self.patch_size

    def weights_digest(self) -> str:
        return weights_digest(self)

    def describe(self) -> dict[str, Any]:
        """Everything about the backbone that changes extracted features (for store config hashes)."""
        return {"name": self.name, "embed_dim": self.embed_dim, "num_frames": self.num_frames,
                "frame_stride": self.frame_stride, "image_size": self.image_size,
                "patch_size": self.patch_size, "tubelet_size": self.tubelet_size,
                "mean": list(self.mean), "std": list(self.std), "weights": self.weights_digest()}


class FrameBackbone(Backbone):
    """An image model applied to each frame; per-frame tokens are concatenated in time order."""

    tubelet_size = 1
    per_frame = True

    @abc.abstractmethod
    def encode_frames(self, frames: Tensor) -> Tensor:
        """Normalised images `[N, 3, H, W]` -> tokens `[N, l, D]` in (h, w) order."""

    def forward_features(self, video: Tensor) -> Tensor:
        check_video(video)
        B, C, T, H, W = video.shape
        frames = video.transpose(1, 2).reshape(B * T, C, H, W)
        tokens = self.encode_frames(frames)
        return tokens.reshape(B, T * tokens.shape[1], tokens.shape[2])

    def token_grid(self, T: int, H: int, W: int) -> tuple[int, int, int]:
        return T, H // self.patch_size, W // self.patch_size

    def encode_frames_with_cls(self, frames: Tensor, blocks: int) -> tuple[Tensor, Tensor]:
        """Images [N, 3, H, W] -> (patch tokens [N, l, D] as `encode_frames`, CLS [N, blocks, D])."""
        return Backbone.forward_with_cls(self, frames[:, :, None], blocks)

    def forward_with_cls(self, video: Tensor, blocks: int) -> tuple[Tensor, Tensor]:
        """Per-frame patch tokens concatenated in time order; each clip's CLS is the mean of its frames'."""
        check_video(video)
        B, C, T, H, W = video.shape
        tokens, cls = self.encode_frames_with_cls(video.transpose(1, 2).reshape(B * T, C, H, W), blocks)
        return (tokens.reshape(B, T * tokens.shape[1], tokens.shape[2]),
                cls.reshape(B, T, *cls.shape[1:]).mean(1))
