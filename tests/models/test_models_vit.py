import math

import numpy as np
import pytest
import torch

from vidcache.models.vit import (
    VIT_SIZES,
    VisionTransformer,
    get_2d_sincos_pos_embed,
    get_3d_sincos_pos_embed,
    vit_from_size,
)


def _ref_1d(dim, pos):
    # The MAE / jepa formula written out independently: sines of every frequency, then cosines.
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=float) / (dim / 2.0))
    out = np.outer(pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def _ref_3d(dim, size, depth, uniform_power):
    rows = [(t, h, w) for t in range(depth) for h in range(size) for w in range(size)]
    t, h, w = (np.array([r[i] for r in rows], dtype=float) for i in range(3))
    if uniform_power:
        dt = dh = dw = int(np.ceil(dim / 6) * 2)
    else:
        dt, dh, dw = dim // 2, dim // 4, dim // 4
    return np.concatenate([_ref_1d(dt, t), _ref_1d(dh, h), _ref_1d(dw, w)], axis=1)[:, :dim]


@pytest.mark.parametrize("uniform_power", [False, True])
def test_3d_sincos_matches_reference_formula(uniform_power):
    got = get_3d_sincos_pos_embed(40, 3, 2, uniform_power=uniform_power).numpy()
    np.testing.assert_allclose(got, _ref_3d(40, 3, 2, uniform_power), rtol=0, atol=1e-12)
    # Golden values: row 0 is position (0,0,0) -> sin 0 = 0 then cos 0 = 1 in each part.
    assert got.shape == (18, 40)
    assert got[0, 0] == 0.0 and got[0, 10] == 1.0


def test_2d_sincos_matches_reference_formula():
    got = get_2d_sincos_pos_embed(16, 3).numpy()
    h, w = np.divmod(np.arange(9), 3)
    ref = np.concatenate([_ref_1d(8, h.astype(float)), _ref_1d(8, w.astype(float))], axis=1)
    np.testing.assert_allclose(got, ref, atol=1e-12)


JEPA_BLOCK_KEYS = ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
                   "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
                   "mlp.fc2.weight", "mlp.fc2.bias"]


def test_parameter_names_and_shapes_match_jepa():
    vit = VisionTransformer(img_size=32, patch_size=16, num_frames=4, tubelet_size=2, embed_dim=48,
                            depth=2, num_heads=3)
    sd = vit.state_dict()
    expected = ["pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"]
    expected += [f"blocks.{i}.{k}" for i in range(2) for k in JEPA_BLOCK_KEYS] + ["norm.weight", "norm.bias"]
    assert sorted(sd) == sorted(expected)
    assert sd["pos_embed"].shape == (1, 2 * 2 * 2, 48)
    assert sd["patch_embed.proj.weight"].shape == (48, 3, 2, 16, 16)
    assert sd["blocks.0.mlp.fc1.weight"].shape == (192, 48)
    assert isinstance(vit.pos_embed, torch.nn.Parameter) and not vit.pos_embed.requires_grad
    image = VisionTransformer(img_size=32, patch_size=16, num_frames=1, embed_dim=48, depth=1, num_heads=3)
    assert image.state_dict()["patch_embed.proj.weight"].shape == (48, 3, 16, 16)


def test_sizes_table_matches_spec():
    assert {k: (v["embed_dim"], v["depth"], v["num_heads"]) for k, v in VIT_SIZES.items()} == {
        "vit_micro": (96, 4, 3), "vit_tiny": (192, 12, 3), "vit_small": (384, 12, 6),
        "vit_base": (768, 12, 12), "vit_large": (1024, 24, 16), "vit_huge": (1280, 32, 16),
        "vit_giant": (1408, 40, 16)}
    assert math.isclose(VIT_SIZES["vit_giant"]["mlp_ratio"], 48 / 11)
    with pytest.raises(ValueError, match="unknown ViT size"):
        vit_from_size("vit_enormous")


def _small_vit(**kw):
    vit = VisionTransformer(img_size=32, patch_size=8, num_frames=4, tubelet_size=2, embed_dim=32, depth=2,
                            num_heads=2, **kw)
    vit.reset_parameters(torch.Generator().manual_seed(0))
    return vit.eval()


def test_masks_keep_tokens():
    vit = _small_vit()
    x = torch.randn(2, 3, 4, 32, 32)
    full = vit(x)
    assert full.shape == (2, 2 * 4 * 4, 32)
    every = torch.arange(32).expand(2, -1)
    torch.testing.assert_close(vit(x, masks=every), full)
    keep = torch.tensor([[0, 5, 9], [31, 2, 7]])
    out = vit(x, masks=keep)
    assert out.shape == (2, 3, 32)
    # Dropped tokens change attention, so kept outputs differ from the full forward's.
    assert not torch.allclose(out, torch.gather(full, 1, keep[..., None].expand(-1, -1, 32)))
    # A list of masks stacks its outputs along the batch (jepa's multi-mask convention).
    stacked = vit(x, masks=[keep, keep.flip(1)])
    assert stacked.shape == (4, 3, 32)
    torch.testing.assert_close(stacked[:2], out)


def test_a_single_token_sees_only_itself():
    # With one kept token, attention is the identity mix: output equals a 1-token forward of that
    # token, which we rebuild by hand from the patch embedding and position table.
    vit = _small_vit()
    x = torch.randn(1, 3, 4, 32, 32)
    keep = torch.tensor([[6]])
    tokens = vit.patch_embed(x) + vit.pos_embed
    h = tokens[:, 6:7]
    for blk in vit.blocks:
        h = blk(h)
    torch.testing.assert_close(vit(x, masks=keep), vit.norm(h))


def test_other_input_sizes_interpolate_positions():
    vit = _small_vit()
    assert vit(torch.randn(1, 3, 8, 48, 32)).shape == (1, 4 * 6 * 4, 32)
    # At the native size the table is used as is.
    assert vit.interpolate_pos_encoding(torch.zeros(1, 3, 4, 32, 32)) is vit.pos_embed
    # Interpolating the table to its own grid gives it back.
    grid = vit.pos_embed.reshape(1, 2, 4, 4, 32).permute(0, 4, 1, 2, 3)
    same = torch.nn.functional.interpolate(grid, size=(2, 4, 4), mode="trilinear")
    torch.testing.assert_close(same.permute(0, 2, 3, 4, 1).reshape(1, -1, 32), vit.pos_embed)
    image = VisionTransformer(img_size=32, patch_size=8, num_frames=1, embed_dim=32, depth=1, num_heads=2)
    assert image(torch.randn(2, 3, 48, 40)).shape == (2, 6 * 5, 32)


def test_seeded_init_is_reproducible_and_scaled():
    a, b = _small_vit(), _small_vit()
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    c = VisionTransformer(img_size=32, patch_size=8, num_frames=4, embed_dim=32, depth=2, num_heads=2)
    c.reset_parameters(torch.Generator().manual_seed(1))
    assert not torch.equal(a.blocks[0].attn.qkv.weight, c.blocks[0].attn.qkv.weight)
    # Output projections of block i are divided by sqrt(2 i): block 2's are smaller than block 1's.
    s1, s2 = a.blocks[0].mlp.fc2.weight.detach().std(), a.blocks[1].mlp.fc2.weight.detach().std()
    assert 1.2 < float(s1 / s2) < 1.6  # sqrt(2) up to sampling noise


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="multiple of tubelet"):
        VisionTransformer(num_frames=5, tubelet_size=2, img_size=32, patch_size=16, embed_dim=32, depth=1,
                          num_heads=2)
    vit = _small_vit()
    with pytest.raises(ValueError, match="5-D input"):
        vit(torch.randn(1, 3, 32, 32))


def test_config_rebuilds_the_architecture():
    vit = _small_vit(uniform_power=True)
    twin = VisionTransformer(**vit.config)
    twin.load_state_dict(vit.state_dict(), strict=True)
    x = torch.randn(1, 3, 4, 32, 32)
    torch.testing.assert_close(twin.eval()(x), vit(x))
