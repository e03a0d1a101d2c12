"""The built-in random backbones carry information without training: filter bank, pooling, pixels."""

import math

import pytest
import torch
import torch.nn.functional as F

from vidcache.errors import ConfigError
from vidcache.models import create_backbone
from vidcache.models.builtin import _FILTER_GAIN, filter_bank


def _drifting_texture(direction: int, seed: int, frames: int = 8, size: int = 64, speed: int = 2) -> torch.Tensor:
    """A smooth random texture translated by `speed` px per frame along x (+1 right, -1 left): [3, T, S, S]."""
    g = torch.Generator().manual_seed(seed)
    base = F.interpolate(torch.randn(1, 3, 16, 16, generator=g), size=(size, size), mode="bilinear",
                         align_corners=False)[0]
    return torch.stack([base.roll(direction * speed * t, dims=-1) for t in range(frames)], dim=1)


def test_filter_bank_sizes_and_norms():
    video, image = filter_bank(8, 4), filter_bank(16, 1)
    assert video.shape == (38, 3, 4, 8, 8) and image.shape == (12, 3, 1, 16, 16)
    torch.testing.assert_close(video.flatten(1).norm(dim=1), torch.ones(38))
    # Colour-opponent filters ignore grey: their channel weights sum to zero.
    torch.testing.assert_close(image[6:].sum(dim=1), torch.zeros(6, 1, 16, 16), atol=1e-6, rtol=0)


def test_motion_pairs_are_direction_selective():
    # Filters 18..25 are (cos, sin) pairs for right, down, left, up at 1.5 px per frame: a grating
    # of one cycle per patch drifting right at that speed excites the right pair, not the left one.
    bank = filter_bank(8, 4).double()
    p, t = 8, 4
    x = torch.arange(p, dtype=torch.float64)
    tt = torch.arange(t, dtype=torch.float64)
    for direction, (hit, miss) in ((1, (18, 22)), (-1, (22, 18))):
        grating = torch.cos(2 * math.pi / p * (x[None, None, :] - direction * 1.5 * tt[:, None, None]))
        clip = grating.expand(t, p, p)[None].expand(3, t, p, p)

        def energy(i):
            return float((bank[i] * clip).sum() ** 2 + (bank[i + 1] * clip).sum() ** 2)

        assert energy(hit) > 10 * energy(miss)  # 14x here; windowing leaks a little


def test_tiny_patch_embedding_is_the_bank_then_seeded_random_filters():
    a, b = create_backbone("tiny", seed=0), create_backbone("tiny", seed=1)
    wa, wb = a.vit.patch_embed.proj.weight.detach(), b.vit.patch_embed.proj.weight.detach()
    torch.testing.assert_close(wa[:38], _FILTER_GAIN * filter_bank(8, 4))
    torch.testing.assert_close(wa[:38], wb[:38])
    assert not torch.allclose(wa[38:], wb[38:])
    # The random filters have fan-in scaled weights: std gain / sqrt(3 * 4 * 8 * 8).
    assert abs(float(wa[38:].std()) - _FILTER_GAIN / math.sqrt(768)) < 0.05 * _FILTER_GAIN / math.sqrt(768)
    # The transformer blocks keep jepa's init (std 0.02 weights).
    assert abs(float(a.vit.blocks[0].mlp.fc1.weight.std()) - 0.02) < 0.002


def test_tiny_pools_by_largest_magnitude_and_says_so():
    model = create_backbone("tiny")
    x = torch.randn(2, 3, 8, 64, 64)
    with torch.no_grad():
        tokens = model.forward_features(x)
        torch.testing.assert_close(model(x), tokens.abs().max(dim=1).values)
    assert model.describe()["pool"] == "max_abs" and create_backbone("tiny_frame").describe()["pool"] == "max_abs"
    assert "pool" not in create_backbone("pixels").describe()


def test_tiny_embeddings_group_by_direction_of_motion():
    # Nearest class centroid on 4 textures per direction, tested on 4 others: direction must be
    # read from the pooled embedding alone (the textures are the same in both classes).
    model = create_backbone("tiny")
    with torch.no_grad():
        emb = {d: model(torch.stack([_drifting_texture(d, s) for s in range(8)])) for d in (1, -1)}
    train = {d: e[:4].mean(0) for d, e in emb.items()}
    correct = 0
    for d, e in emb.items():
        for v in e[4:]:
            pred = min(train, key=lambda k: float((v - train[k]).norm()))
            correct += pred == d
    assert correct == 8


def test_pixels_is_a_block_average_per_frame():
    model = create_backbone("pixels")
    assert (model.embed_dim, model.num_frames, model.image_size) == (192, 8, 64)
    x = torch.randn(2, 3, 8, 64, 64)
    with torch.no_grad():
        tokens = model.forward_features(x)
    ref = x.reshape(2, 3, 8, 8, 8, 8, 8).mean(dim=(4, 6))  # [B, C, T, gh, gw]
    ref = ref.permute(0, 2, 1, 3, 4).reshape(2, 8, 192)
    torch.testing.assert_close(tokens, ref)
    assert model.token_grid(8, 64, 64) == (8, 1, 1)
    # Per frame and mean pooled: the reversed clip has the same embedding.
    torch.testing.assert_close(model(x.flip(2)), model(x))
    assert create_backbone("pixels", grid=4).embed_dim == 48
    assert create_backbone("pixels").weights_digest() == create_backbone("pixels").weights_digest()


def test_pixels_refuses_a_grid_that_does_not_divide_the_image():
    with pytest.raises(ConfigError, match="multiple of grid"):
        create_backbone("pixels", grid=7)
