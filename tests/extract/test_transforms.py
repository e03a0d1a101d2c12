"""Clip transforms: exact crops on the original frame, antialiased resize, normalisation math."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch.testing import assert_close

from vidcache.extract.sampling import frames_needed, plan_clips
from vidcache.extract.transforms import ClipTransform, clip_tensor, video_clips_tensor

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def coords_video(t=3, h=24, w=32):
    """Frame t, pixel (y, x) holds RGB (x, y, 10 t): every output pixel says where it came from."""
    f = np.zeros((t, h, w, 3), np.uint8)
    f[..., 0] = np.arange(w)[None, None, :]
    f[..., 1] = np.arange(h)[None, :, None]
    f[..., 2] = 10 * np.arange(t)[:, None, None]
    return f


def test_normalisation_golden():
    frames = np.empty((2, 8, 8, 3), np.uint8)
    frames[...] = (51, 102, 204)
    out = clip_tensor(frames, (0, 0, 8, 8), 8, MEAN, STD)
    assert out.shape == (3, 2, 8, 8) and out.dtype == torch.float32
    expected = [(51 / 255 - 0.485) / 0.229, (102 / 255 - 0.456) / 0.224, (204 / 255 - 0.406) / 0.225]
    for c in range(3):
        assert_close(out[c], torch.full((2, 8, 8), expected[c]), rtol=0, atol=1e-6)
    # a constant frame stays constant through any crop and resize
    out = clip_tensor(np.repeat(frames, 4, axis=1), (3, 5, 8, 30), 5, MEAN, STD)
    assert_close(out[2], torch.full((2, 5, 5), expected[2]), rtol=0, atol=1e-5)


def test_crop_is_taken_on_the_original_frame():
    frames = coords_video()
    out = clip_tensor(frames, (10, 5, 26, 21), 16, (0, 0, 0), (1, 1, 1))  # crop already 16x16: no resize
    assert out.shape == (3, 3, 16, 16)
    assert_close(out[0, 1] * 255, torch.arange(10, 26.).expand(16, 16), rtol=0, atol=1e-4)  # x
    assert_close(out[1, 2] * 255, torch.arange(5, 21.)[:, None].expand(16, 16), rtol=0, atol=1e-4)  # y
    assert_close(out[2, :, 0, 0] * 255, torch.tensor([0., 10, 20]), rtol=0, atol=1e-4)  # frame order


def test_resize_matches_pil_antialiased_bilinear():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 40, 60, 3), dtype=np.uint8)
    crop = (7, 3, 55, 39)  # 48 x 36 -> 16 x 16: different scales along x and y
    out = clip_tensor(frames, crop, 16, (0, 0, 0), (1, 1, 1))
    for t in range(2):
        pil = Image.fromarray(frames[t, 3:39, 7:55]).resize((16, 16), Image.BILINEAR)
        ref = torch.from_numpy(np.array(pil)).permute(2, 0, 1).float() / 255
        # PIL rounds to uint8; torch keeps floats: at most one grey level apart
        assert (out[:, t] - ref).abs().max() <= 1.01 / 255


def test_video_clips_tensor_equals_per_clip_transform():
    rng = np.random.default_rng(1)
    specs = plan_clips("2x3", num_frames=20, height=24, width=32, clip_len=4, stride=2)
    unique, positions = frames_needed(specs)
    video = rng.integers(0, 256, (20, 24, 32, 3), dtype=np.uint8)
    decoded = video[unique]
    batch = video_clips_tensor(decoded, specs, 12, MEAN, STD)
    assert batch.shape == (6, 3, 4, 12, 12)
    for c, spec in enumerate(specs):
        assert_close(batch[c], clip_tensor(video[spec.frame_indices], spec, 12, MEAN, STD))
    with pytest.raises(ValueError, match="frames_needed"):
        video_clips_tensor(decoded[:-1], specs, 12, MEAN, STD)


def test_half_precision_torch_input_and_transform_object():
    frames = torch.from_numpy(coords_video())
    spec = plan_clips("1x1", num_frames=3, height=24, width=32, clip_len=3)[0]
    half = clip_tensor(frames, spec, 8, MEAN, STD, dtype=torch.float16)
    full = clip_tensor(frames.numpy(), spec, 8, MEAN, STD)
    assert half.dtype == torch.float16
    assert_close(half.float(), full, rtol=0, atol=5e-3)
    tf = pickle.loads(pickle.dumps(ClipTransform(8, MEAN, STD)))  # DataLoader workers pickle it
    assert_close(tf(frames, spec), full)


def test_bad_inputs():
    frames = coords_video()
    with pytest.raises(TypeError, match="uint8"):
        clip_tensor(frames.astype(np.float32), (0, 0, 4, 4), 4, MEAN, STD)
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        clip_tensor(frames[..., :2], (0, 0, 4, 4), 4, MEAN, STD)
    with pytest.raises(ValueError, match="does not fit"):
        clip_tensor(frames, (20, 0, 40, 10), 4, MEAN, STD)
    with pytest.raises(ValueError, match="3 values"):
        clip_tensor(frames, (0, 0, 4, 4), 4, (0.5,), STD)


@pytest.mark.gpu
def test_cuda_matches_cpu():
    rng = np.random.default_rng(2)
    specs = plan_clips("5x3", num_frames=40, height=48, width=64, clip_len=4, stride=2)
    unique, _ = frames_needed(specs)
    decoded = rng.integers(0, 256, (len(unique), 48, 64, 3), dtype=np.uint8)
    cpu = video_clips_tensor(decoded, specs, 32, MEAN, STD)
    gpu = video_clips_tensor(decoded, specs, 32, MEAN, STD, device="cuda")
    assert gpu.device.type == "cuda"
    assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-4)
    one = clip_tensor(torch.from_numpy(decoded[:4]).cuda(), specs[0], 32, MEAN, STD)
    assert one.device.type == "cuda"
