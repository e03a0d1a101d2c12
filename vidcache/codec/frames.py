"""Frame selection, resizing and patchifying: the pixel pipeline shared by training, encoding and eval.

Everything here is deterministic so that `vidcache codec eval` can rebuild, from the source video,
exactly the frames that `vidcache extract codes` quantized: same frame indices (`select_frames`),
same short-side resize and centre crop (`preprocess_frames`), same patch layout (`patchify`).

Patch layout: a frame [H, W, 3] of `size x size` pixels is cut into an (H/p) x (W/p) grid; each patch
is flattened row-major as [p, p, 3] (row, column, channel), so a patch vector has p*p*3 entries and a
centroid can be reshaped back to a [p, p, 3] tile without any permutation table.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from vidcache.errors import ConfigError, DataError

# Frames resized per call to interpolate: bounds the float32 copy (64 x 3 x 720 x 1280 x 4 B = 700 MB).
_RESIZE_CHUNK = 16


def select_frames(num_frames: int, native_fps: float, fps: float | None = None,
                  max_frames: int | None = None) -> np.ndarray:
    """Indices of the frames to keep from a video of `num_frames` frames at `native_fps`.

    `fps` resamples to that rate by taking, for each output time t = i / fps, the last source frame
    shown at t (no interpolation, no upsampling: an `fps` at or above the native rate keeps every
    frame). `max_frames` then keeps the centred window of that many frames, since the start and end
    of clips are where fades and titles sit. Extraction and evaluation both call this, so the frames
    they see are the same.
    """
    if num_frames <= 0:
        raise DataError("the video has no frames")
    if fps is not None and fps <= 0:
        raise ConfigError([f"fps must be > 0 (got {fps}); leave it unset to keep the native rate"], "frame selection")
    if max_frames is not None and max_frames <= 0:
        raise ConfigError([f"max_frames must be > 0 (got {max_frames}); leave it unset to keep all frames"],
                          "frame selection")
    if fps is None or native_fps <= 0 or fps >= native_fps:
        idx = np.arange(num_frames, dtype=np.int64)
    else:
        duration = num_frames / native_fps
        n_out = max(1, int(math.floor(duration * fps + 1e-9)))
        # The small epsilon keeps exact multiples (e.g. 30 -> 15 fps) on the intended frame
        # despite floating-point error in i * native / fps.
        idx = np.floor(np.arange(n_out) * (native_fps / fps) + 1e-6).astype(np.int64)
        idx = np.minimum(idx, num_frames - 1)
    if max_frames is not None and len(idx) > max_frames:
        start = (len(idx) - max_frames) // 2
        idx = idx[start:start + max_frames]
    return idx


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """Shape after resizing the short side to `size` (aspect ratio kept, long side rounded)."""
    if min(height, width) <= 0:
        raise DataError(f"frame of size {height}x{width} has no pixels")
    scale = size / min(height, width)
    return max(size, round(height * scale)), max(size, round(width * scale))


def preprocess_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 [T, H, W, 3] -> uint8 [T, size, size, 3]: short side resized to `size`, centre crop.

    Resizing is bilinear with antialiasing (torch's uint8 kernel), so downscaling does not alias;
    frames already at `size x size` pass through untouched.
    """
    return resize_short_side(frames, size, crop=True)


def resize_short_side(frames: np.ndarray, size: int, crop: bool = False) -> np.ndarray:
    """uint8 [T, H, W, 3] -> short side resized to `size` (aspect kept); `crop` keeps the centre square."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise DataError(f"frames must be uint8 [T, H, W, 3] RGB, got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise DataError(f"frames must be uint8, got {frames.dtype}")
    t, h, w, _ = frames.shape
    nh, nw = resized_shape(h, w, size)
    oh, ow = (size, size) if crop else (nh, nw)
    if (h, w) == (oh, ow):
        return np.ascontiguousarray(frames)
    top, left = (nh - oh) // 2, (nw - ow) // 2
    out = np.empty((t, oh, ow, 3), dtype=np.uint8)
    for s in range(0, t, _RESIZE_CHUNK):
        # uint8 in channels-last layout (a free permute of [T, H, W, 3]) takes torch's SIMD resize
        # path: ~20x faster than float, and it rounds to uint8 itself.
        x = torch.from_numpy(np.ascontiguousarray(frames[s:s + _RESIZE_CHUNK])).permute(0, 3, 1, 2)
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        out[s:s + _RESIZE_CHUNK] = x[:, :, top:top + oh, left:left + ow].permute(0, 2, 3, 1).numpy()
    return out


def patchify(frames: np.ndarray, patch: int) -> np.ndarray:
    """uint8 [T, H, W, 3] -> [T, H/p, W/p, p*p*3] (row-major [p, p, 3] patch vectors), a view-free copy."""
    t, h, w, c = frames.shape
    if h % patch or w % patch:
        raise DataError(f"frame {h}x{w} is not divisible by the patch size {patch}")
    x = frames.reshape(t, h // patch, patch, w // patch, patch, c)
    return np.ascontiguousarray(x.transpose(0, 1, 3, 2, 4, 5)).reshape(t, h // patch, w // patch, patch * patch * c)


def unpatchify(patches: np.ndarray, patch: int) -> np.ndarray:
    """[..., h, w, p*p*3] -> [..., h*p, w*p, 3], the inverse of `patchify`."""
    *lead, h, w, d = patches.shape
    if d != patch * patch * 3:
        raise DataError(f"patch vectors have {d} entries, expected {patch * patch * 3} for patch {patch}")
    x = patches.reshape(*lead, h, w, patch, patch, 3)
    n = len(lead)
    perm = (*range(n), n, n + 2, n + 1, n + 3, n + 4)
    return x.transpose(perm).reshape(*lead, h * patch, w * patch, 3)
