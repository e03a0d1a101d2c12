import hashlib
import subprocess
import sys

import pytest
import torch
from torch import nn

from vidcache.errors import ConfigError, VidcacheError
from vidcache.models import (
    Backbone,
    count_flops,
    create_backbone,
    list_backbones,
    list_prefixes,
    register_backbone,
    register_prefix,
    weights_digest,
)
from vidcache.models import registry


@pytest.mark.parametrize("name", list_backbones())
def test_every_registered_backbone_runs(name):
    model = create_backbone(name)
    assert model.name == name and not model.training
    T, S = model.num_frames, model.image_size
    x = torch.randn(2, 3, T, S, S)
    with torch.no_grad():
        tokens = model.forward_features(x)
    t, h, w = model.token_grid(T, S, S)
    assert tokens.shape == (2, t * h * w, model.embed_dim)
    assert model.pool(tokens).shape == (2, model.embed_dim)
    assert torch.isfinite(tokens).all()
    assert len(model.mean) == len(model.std) == 3 and model.frame_stride >= 1
    described = model.describe()
    assert described["weights"] == model.weights_digest() and described["name"] == name


def test_builtins_listed():
    assert {"tiny", "tiny_frame"} <= set(list_backbones())
    assert list_backbones("tiny_f*") == ["tiny_frame"]
    assert {p.split(":")[0] for p in list_prefixes()} == {"hf", "timm", "torchscript", "vjepa", "vidcache"}


def test_tiny_is_deterministic_for_a_seed():
    a, b, c = create_backbone("tiny"), create_backbone("tiny", seed=0), create_backbone("tiny", seed=1)
    assert a.weights_digest() == b.weights_digest() != c.weights_digest()
    x = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_building_tiny_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    create_backbone("tiny")
    torch.testing.assert_close(torch.rand(3), expected)


def test_tiny_weights_are_identical_in_another_process():
    code = "from vidcache.models import create_backbone; print(create_backbone('tiny').weights_digest())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == create_backbone("tiny").weights_digest()


def test_tiny_frame_encodes_frames_independently():
    model = create_backbone("tiny_frame")
    x = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        base = model.forward_features(x)
        y = x.clone()
        y[:, :, 3] = torch.randn(3, 64, 64)
        changed = model.forward_features(y)
        reversed_ = model.forward_features(x.flip(2))
    per = 16  # 4 x 4 tokens per frame
    diff = (base - changed).abs().reshape(8, per, -1).amax(dim=(1, 2))
    assert diff[3] > 1e-3 and torch.all(diff[torch.arange(8) != 3] == 0)
    # No time position: reversing the clip reverses the frame blocks, and the pooled vector is equal.
    torch.testing.assert_close(reversed_.reshape(8, per, -1), base.reshape(8, per, -1).flip(0))
    torch.testing.assert_close(model.pool(reversed_), model.pool(base))


def test_tiny_sees_time_order():
    model = create_backbone("tiny")
    x = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(model(x), model(x.flip(2)), atol=1e-4)


def test_unknown_names_suggest_close_matches():
    with pytest.raises(VidcacheError) as err:
        create_backbone("tiyn")
    msg = str(err.value)
    assert "'tiny'" in msg and "hf:" in msg and "vjepa:" in msg and "\n" not in msg
    with pytest.raises(VidcacheError, match="did you mean 'timm:'"):
        create_backbone("tim:resnet18")
    with pytest.raises(VidcacheError, match="missing its argument"):
        create_backbone("vjepa:")


def test_unknown_options_are_refused_but_trust_is_ignored_where_moot():
    with pytest.raises(ConfigError, match="unknown option 'depth'.*seed"):
        create_backbone("tiny", depth=3)
    assert create_backbone("tiny", trust_checkpoint=True).embed_dim == 96
    with pytest.raises(ConfigError, match="not a multiple of patch_size"):
        create_backbone("tiny", image_size=60)
    with pytest.raises(ConfigError, match="unknown ViT size"):
        create_backbone("tiny_frame", size="vit_enormous")


class _LinearBackbone(Backbone):
    """Tokens = a linear map of each 2x8x8 tubelet, to count FLOPs by hand."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3 * 2 * 8 * 8, 10, bias=False)
        self.set_input_spec(embed_dim=10, num_frames=4, image_size=16, patch_size=8, tubelet_size=2)

    def forward_features(self, video):
        B = video.shape[0]
        x = video.reshape(B, 3, 2, 2, 2, 8, 2, 8).permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(B, 8, -1)
        return self.lin(x)


def test_register_custom_backbone_and_prefix(monkeypatch):
    monkeypatch.setattr(registry, "_BACKBONES", dict(registry._BACKBONES))
    monkeypatch.setattr(registry, "_PREFIXES", dict(registry._PREFIXES))
    monkeypatch.setattr(registry, "_PREFIX_HELP", dict(registry._PREFIX_HELP))

    @register_backbone("linear_test")
    def linear_test():
        return _LinearBackbone()

    @register_prefix("lin", "lin:<anything>")
    def lin(arg, scale: float = 1.0):
        model = _LinearBackbone()
        model.frame_stride = int(arg)
        return model

    assert "linear_test" in list_backbones()
    assert create_backbone("lin:3").frame_stride == 3
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("linear_test")(lambda: _LinearBackbone())
    with pytest.raises(ValueError, match="cannot contain"):
        register_backbone("a:b")


def test_count_flops_of_a_linear_backbone_is_exact():
    model = _LinearBackbone()
    # 8 tokens x (384 inputs x 10 outputs) multiply-adds, per clip, 2 FLOPs each.
    assert count_flops(model) == 2 * 8 * 384 * 10
    assert count_flops(model, (3, 3, 4, 16, 16)) == 3 * 2 * 8 * 384 * 10


def test_count_flops_of_tiny_matches_the_architecture():
    model = create_backbone("tiny")
    L, D, depth = 128, 96, 4
    patch = L * D * (3 * 4 * 8 * 8)
    per_block = L * 12 * D * D + 2 * L * L * D  # qkv+proj+mlp, then QK^T and AV
    assert count_flops(model) == 2 * (patch + depth * per_block)


def test_weights_digest_tracks_every_weight():
    lin = nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.arange(6.0).reshape(2, 3))
        lin.bias.zero_()
    ref = hashlib.sha256()
    for name, t in lin.state_dict().items():
        ref.update(f"{name}|float32|{tuple(t.shape)}|".encode())
        ref.update(t.numpy().tobytes())
    assert weights_digest(lin) == ref.hexdigest()

    model = create_backbone("tiny")
    before = model.weights_digest()
    assert model.weights_digest() == before  # cached
    with torch.no_grad():
        model.vit.blocks[2].mlp.fc1.weight[0, 0] += 1e-3
    changed = model.weights_digest()
    assert changed != before
    with torch.no_grad():
        model.vit.blocks[2].mlp.fc1.weight[0, 0] -= 1e-3
    # Rounding may not restore the exact float; rebuild to compare with an untouched model.
    assert create_backbone("tiny").weights_digest() == before
    assert create_backbone("tiny").to(torch.bfloat16).weights_digest() != before


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["tiny", "tiny_frame"])
def test_cuda_forward_matches_cpu(name):
    cpu = create_backbone(name)
    gpu = create_backbone(name).to("cuda")
    assert gpu.weights_digest() == cpu.weights_digest()  # the digest does not depend on the device
    x = torch.randn(3, 3, 8, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(gpu(x.cuda()).cpu(), cpu(x), rtol=1e-3, atol=1e-3)
    # Attention is counted on both devices (different kernels), so FLOPs agree.
    assert count_flops(gpu) == count_flops(cpu)


def test_is_backbone_and_problems_without_building():
    from vidcache.models.registry import backbone_problems, is_backbone

    assert is_backbone("tiny") and is_backbone("hf:some/model") and is_backbone("vidcache:run/ckpt_000010.pt")
    assert not is_backbone("tinyy") and not is_backbone("hf:") and not is_backbone("nope:x")
    assert backbone_problems("tiny") == []
    (p,) = backbone_problems("tinyy")
    assert p.startswith("unknown backbone 'tinyy'; did you mean 'tiny'")
    (p,) = backbone_problems("hf:")
    assert p.startswith("backbone 'hf:' is missing its argument: use hf:")
    (p,) = backbone_problems("hff:x")
    assert "unknown backbone prefix 'hff:'" in p and "did you mean 'hf:'" in p
