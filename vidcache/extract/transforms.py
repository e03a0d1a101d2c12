"""Clip tensors for a backbone: crop on the original frame, resize, scale to [0, 1], normalise.

uint8 frames [T, H, W, 3] (numpy or torch, CPU or GPU) -> float [3, T, S, S]:

1. crop the pixel rectangle of the clip's `ClipSpec.crop`, on the ORIGINAL frame, so the stored box
   describes exactly the pixels the backbone saw (a short-side resize followed by a crop would round
   the box);
2. resize the crop to S x S, bilinear with antialiasing (downscaling without it aliases, and the
   features of a frozen backbone notice);
3. divide by 255 and normalise per channel with the backbone's `mean` / `std`, given in [0, 1] units
   (ImageNet: mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)).

The same code runs in DataLoader workers on CPU and batched on a GPU (`device=`): upload the uint8
frames once (4x less traffic than float) and do the arithmetic on the device.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vidcache.extract.sampling import ClipSpec, frames_needed


def _as_uint8_tensor(frames, device: torch.device | str | None) -> torch.Tensor:
    if isinstance(frames, np.ndarray):
        frames = np.ascontiguousarray(frames)
        # torch refuses to share read-only memory (a memmap, a decoder's buffer) without a warning
        x = torch.from_numpy(frames if frames.flags.writeable else frames.copy())
    else:
        x = frames
    if x.dtype != torch.uint8:
        raise TypeError(f"frames must be uint8 [T, H, W, 3], got dtype {x.dtype}")
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"frames must be [T, H, W, 3], got shape {tuple(x.shape)}")
    return x.to(device, non_blocking=True) if device is not None else x


def _crop_of(spec: ClipSpec | Sequence[int], height: int, width: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (int(v) for v in (spec.crop if isinstance(spec, ClipSpec) else spec))
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(f"crop {(x0, y0, x1, y1)} does not fit in a {width}x{height} frame")
    return x0, y0, x1, y1


def _stats(values: Sequence[float], device, dtype) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=dtype, device=device).reshape(-1)
    if t.numel() != 3:
        raise ValueError(f"mean/std need 3 values (one per RGB channel), got {t.numel()}")
    return t.view(3, 1, 1, 1)


def _resize_normalise(x: torch.Tensor, size: int | tuple[int, int], mean: torch.Tensor, std: torch.Tensor,
                      dtype: torch.dtype) -> torch.Tensor:
    """[N, h, w, 3] uint8 crops -> [3, N, size, size] (or [3, N, *size]) normalised."""
    target = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    x = x.permute(0, 3, 1, 2).to(torch.float32)  # interpolate wants [N, C, h, w] in float
    if tuple(x.shape[-2:]) != target:
        x = F.interpolate(x, size=target, mode="bilinear", antialias=True, align_corners=False)
    x = x.permute(1, 0, 2, 3).to(dtype)
    return (x / 255.0 - mean) / std


def clip_tensor(frames, spec: ClipSpec | Sequence[int], size: int, mean: Sequence[float],
                std: Sequence[float], device: torch.device | str | None = None,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One clip: uint8 frames [T, H, W, 3] (already gathered for this clip) -> [3, T, size, size].

    `spec` is the clip's ClipSpec or a pixel crop (x0, y0, x1, y1); `device` None keeps the frames
    where they are.
    """
    x = _as_uint8_tensor(frames, device)
    x0, y0, x1, y1 = _crop_of(spec, x.shape[1], x.shape[2])
    return _resize_normalise(x[:, y0:y1, x0:x1], size, _stats(mean, x.device, dtype),
                             _stats(std, x.device, dtype), dtype)


def video_clips_tensor(frames, specs: Sequence[ClipSpec], size: int, mean: Sequence[float],
                       std: Sequence[float], device: torch.device | str | None = None,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """All clips of a video: [C, 3, T, size, size] from the frames of `frames_needed(specs)`.

    `frames` are uint8 [U, H, W, 3], the decoded `unique` frames (in that order). They are uploaded
    once, and the clips that share a crop (the temporal windows of one spatial position) are resized
    in one call.
    """
    if not specs:
        raise ValueError("no clips to build")
    unique, positions = frames_needed(list(specs))
    x = _as_uint8_tensor(frames, device)
    if x.shape[0] != len(unique):
        raise ValueError(f"expected the {len(unique)} frames of frames_needed(specs), got {x.shape[0]}")
    mean_t, std_t = _stats(mean, x.device, dtype), _stats(std, x.device, dtype)
    pos = torch.as_tensor(positions, device=x.device)
    clip_len = pos.shape[1]
    out = torch.empty((len(specs), 3, clip_len, size, size), dtype=dtype, device=x.device)
    by_crop: dict[tuple[int, int, int, int], list[int]] = {}
    for c, spec in enumerate(specs):
        by_crop.setdefault(_crop_of(spec, x.shape[1], x.shape[2]), []).append(c)
    for (x0, y0, x1, y1), clips in by_crop.items():
        sel = pos[clips].reshape(-1)
        y = _resize_normalise(x[sel, y0:y1, x0:x1], size, mean_t, std_t, dtype)  # [3, n*T, S, S]
        out[clips] = y.view(3, len(clips), clip_len, size, size).transpose(0, 1)
    return out


def frames_tensor(frames, height: int, width: int, mean: Sequence[float], std: Sequence[float],
                  device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Whole frames uint8 [N, H, W, 3] -> [3, N, height, width] resized (no crop) and normalised."""
    x = _as_uint8_tensor(frames, device)
    return _resize_normalise(x, (height, width), _stats(mean, x.device, dtype), _stats(std, x.device, dtype), dtype)


class ClipTransform:
    """Picklable callable for DataLoader workers: `(frames, spec) -> [3, T, size, size]` on CPU."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float],
                 dtype: torch.dtype = torch.float32):
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.size, self.mean, self.std, self.dtype = int(size), tuple(mean), tuple(std), dtype

    def __call__(self, frames, spec: ClipSpec | Sequence[int]) -> torch.Tensor:
        return clip_tensor(frames, spec, self.size, self.mean, self.std, dtype=self.dtype)

    def __repr__(self) -> str:
        return f"ClipTransform(size={self.size}, mean={self.mean}, std={self.std})"
