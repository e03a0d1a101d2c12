import json

import pytest
import torch
from torch import nn

from vidcache.errors import VidcacheError
from vidcache.models import (
    create_backbone,
    load_checkpoint,
    make_checkpoint,
    read_vidcache_checkpoint,
    save_checkpoint_atomic,
)
from vidcache.models.builtin import infer_vit_config
from vidcache.models.vit import VisionTransformer


class Payload:
    """A custom class: only a trusted load may rebuild it."""

    def __init__(self, value):
        self.value = value


def _vit(seed, **kw):
    cfg = dict(img_size=32, patch_size=16, num_frames=4, tubelet_size=2, embed_dim=96, depth=2, num_heads=3)
    cfg.update(kw)
    vit = VisionTransformer(**cfg)
    vit.reset_parameters(torch.Generator().manual_seed(seed))
    with torch.no_grad():  # non-trivial norms and biases so a wrong mapping shows in the outputs
        for p in vit.parameters():
            if p.requires_grad and p.dim() == 1:
                p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(seed + 7)))
    return vit.eval()


def _clip(T=4, S=32):
    return torch.randn(2, 3, T, S, S, generator=torch.Generator().manual_seed(0))


def test_atomic_save_replaces_whole_files(tmp_path):
    path = tmp_path / "sub" / "ckpt.pt"
    save_checkpoint_atomic({"a": torch.ones(2)}, path)
    save_checkpoint_atomic({"a": torch.zeros(2)}, path)
    assert torch.equal(load_checkpoint(path)["a"], torch.zeros(2))
    with pytest.raises(Exception):
        save_checkpoint_atomic({"a": lambda: 0}, path)  # unpicklable: the old file must survive
    assert torch.equal(load_checkpoint(path)["a"], torch.zeros(2))
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt.pt"]


def test_unreadable_checkpoints_give_one_line_errors(tmp_path):
    with pytest.raises(VidcacheError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(VidcacheError, match="cannot read checkpoint"):
        load_checkpoint(junk)
    good = tmp_path / "good.pt"
    torch.save({"w": torch.randn(100, 100)}, good)
    torn = tmp_path / "torn.pt"
    torn.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(VidcacheError, match="truncated"):
        load_checkpoint(torn)


def test_pickled_objects_need_trust(tmp_path):
    path = tmp_path / "obj.pt"
    torch.save({"payload": Payload(torch.arange(3))}, path)
    with pytest.raises(VidcacheError, match="--trust-checkpoint") as err:
        load_checkpoint(path)
    assert "Payload" in str(err.value) and "\n" not in str(err.value)
    assert torch.equal(load_checkpoint(path, trust=True)["payload"].value, torch.arange(3))


def test_safetensors_load(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.arange(4.0)}, str(tmp_path / "w.safetensors"))
    assert torch.equal(load_checkpoint(tmp_path / "w.safetensors")["w"], torch.arange(4.0))


def _jepa_ckpt(enc, target, **extra):
    def wrap(vit):
        return {f"module.backbone.{k}": v.clone() for k, v in vit.state_dict().items()}
    return {"encoder": wrap(enc), "target_encoder": wrap(target), "predictor": {"module.x": torch.ones(1)},
            "epoch": 3, **extra}


def test_vjepa_checkpoint_loads_strictly(tmp_path):
    enc, target = _vit(0), _vit(1)
    path = tmp_path / "vitl.pth.tar"
    torch.save(_jepa_ckpt(enc, target), path)
    model = create_backbone(f"vjepa:{path}")
    assert (model.embed_dim, model.num_frames, model.image_size, model.patch_size, model.tubelet_size) == (
        96, 4, 32, 16, 2)
    x = _clip()
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), target(x), rtol=0, atol=0)
        torch.testing.assert_close(create_backbone(f"vjepa:{path}", which="encoder").forward_features(x), enc(x),
                                   rtol=0, atol=0)
    with pytest.raises(VidcacheError, match="no 'ema' weights"):
        create_backbone(f"vjepa:{path}", which="ema")


def test_vjepa_infers_architecture_from_shapes():
    vit = _vit(0, embed_dim=64, depth=3, num_heads=4, mlp_ratio=2.0, num_frames=8, tubelet_size=4,
               patch_size=8, img_size=24)
    sd = vit.state_dict()
    with pytest.raises(VidcacheError, match="num_heads"):
        infer_vit_config(sd)
    cfg = infer_vit_config(sd, num_heads=4, image_size=24)
    expected = {k: vit.config[k] for k in cfg}
    assert cfg == expected
    with pytest.raises(VidcacheError, match="does not fit"):
        infer_vit_config(sd, num_heads=4, image_size=40)
    # 16 positions of 16-px patches read as 8 frames of 32 px or 2 frames of 64 px: the larger
    # usual size wins unless the asked clip length picks the other reading.
    sd = _vit(0, num_frames=8).state_dict()
    assert (infer_vit_config(sd)["img_size"], infer_vit_config(sd)["num_frames"]) == (64, 2)
    assert (infer_vit_config(sd, num_frames=8)["img_size"], infer_vit_config(sd, num_frames=8)["num_frames"]) == (32, 8)


def test_vjepa_clip_length_can_differ_from_training(tmp_path):
    target = _vit(1)
    path = tmp_path / "ckpt.pt"
    torch.save(_jepa_ckpt(target, target), path)
    model = create_backbone(f"vjepa:{path}", num_frames=8)
    assert model.num_frames == 8 and model.vit.num_frames == 4
    with torch.no_grad():
        assert model.forward_features(_clip(T=8)).shape == (2, 4 * 2 * 2, 96)
    with pytest.raises(VidcacheError, match="multiple of the tubelet"):
        create_backbone(f"vjepa:{path}", num_frames=5)


def test_vjepa_refuses_missing_and_extra_keys(tmp_path):
    enc = _vit(0)
    ckpt = _jepa_ckpt(enc, enc)
    del ckpt["target_encoder"]["module.backbone.blocks.1.attn.proj.bias"]
    torch.save(ckpt, tmp_path / "missing.pt")
    with pytest.raises(VidcacheError, match=r"missing keys: blocks\.1\.attn\.proj\.bias"):
        create_backbone(f"vjepa:{tmp_path / 'missing.pt'}")
    ckpt = _jepa_ckpt(enc, enc)
    ckpt["target_encoder"]["module.backbone.blocks.0.attn.q_norm.weight"] = torch.ones(96)
    torch.save(ckpt, tmp_path / "extra.pt")
    with pytest.raises(VidcacheError, match=r"unexpected keys: blocks\.0\.attn\.q_norm\.weight"):
        create_backbone(f"vjepa:{tmp_path / 'extra.pt'}")


def test_vjepa_with_pickled_objects_needs_trust(tmp_path):
    enc = _vit(0)
    path = tmp_path / "args.pt"
    torch.save(_jepa_ckpt(enc, enc, args=Payload("cfg")), path)
    with pytest.raises(VidcacheError, match="--trust-checkpoint"):
        create_backbone(f"vjepa:{path}")
    model = create_backbone(f"vjepa:{path}", trust_checkpoint=True)
    x = _clip()
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), enc(x))


def test_image_jepa_state_dict_runs_per_frame(tmp_path):
    image = _vit(2, num_frames=1)
    torch.save(image.state_dict(), tmp_path / "ijepa.pt")
    model = create_backbone(f"vjepa:{tmp_path / 'ijepa.pt'}", num_frames=3)
    x = _clip(T=3)
    with torch.no_grad():
        tokens = model.forward_features(x)
        torch.testing.assert_close(tokens[:, 4:8], image(x[:, :, 1]))
    assert tokens.shape == (2, 3 * 4, 96) and model.token_grid(3, 32, 32) == (3, 2, 2)


def test_vidcache_checkpoint_round_trip(tmp_path):
    enc, target = _vit(0), _vit(1)
    ckpt = make_checkpoint(enc.config, target.state_dict(), encoder=enc.state_dict(), step=42,
                           preprocess={"mean": [0.5] * 3, "std": [0.25] * 3, "frame_stride": 3},
                           optimizer={"lr": 0.1})
    path = save_checkpoint_atomic(ckpt, tmp_path / "step42.pt")
    assert read_vidcache_checkpoint(path)["step"] == 42
    model = create_backbone(f"vidcache:{path}")
    assert model.mean == (0.5, 0.5, 0.5) and model.std == (0.25, 0.25, 0.25) and model.frame_stride == 3
    x = _clip()
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), target(x), rtol=0, atol=0)
        torch.testing.assert_close(create_backbone(f"vidcache:{path}", which="encoder").forward_features(x),
                                   enc(x), rtol=0, atol=0)


def test_vidcache_checkpoint_problems(tmp_path):
    torch.save({"target_encoder": {}}, tmp_path / "plain.pt")
    with pytest.raises(VidcacheError, match="not a vidcache checkpoint"):
        create_backbone(f"vidcache:{tmp_path / 'plain.pt'}")
    vit = _vit(0)
    state = vit.state_dict()
    del state["norm.bias"]
    save_checkpoint_atomic(make_checkpoint(vit.config, state), tmp_path / "broken.pt")
    with pytest.raises(VidcacheError, match=r"missing keys: norm\.bias"):
        create_backbone(f"vidcache:{tmp_path / 'broken.pt'}")
    save_checkpoint_atomic(make_checkpoint({**vit.config, "depht": 2}, vit.state_dict()), tmp_path / "cfg.pt")
    with pytest.raises(VidcacheError, match="invalid model_config"):
        create_backbone(f"vidcache:{tmp_path / 'cfg.pt'}")


class _Tubelets(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Conv3d(3, 8, kernel_size=(2, 4, 4), stride=(2, 4, 4))
        self.embed_dim = 8
        self.num_frames = 4
        self.image_size = 8

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


def test_torchscript_round_trip(tmp_path):
    import warnings

    module = _Tubelets().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(module)
    path = tmp_path / "enc.pt"
    scripted.save(str(path))
    with pytest.raises(VidcacheError, match="returned 8 tokens.*1x1x1 grid"):
        # Without patch/tubelet metadata the backbone assumes one token; the forward says otherwise.
        create_backbone(f"torchscript:{path}").forward_features(torch.randn(1, 3, 4, 8, 8))
    (tmp_path / "enc.pt.json").write_text(json.dumps({"patch_size": 4, "tubelet_size": 2, "frame_stride": 5}))
    model = create_backbone(f"torchscript:{path}", mean=[0.5] * 3)
    assert (model.embed_dim, model.num_frames, model.image_size, model.frame_stride) == (8, 4, 8, 5)
    assert model.mean == (0.5, 0.5, 0.5)
    x = torch.randn(2, 3, 4, 8, 8)
    with torch.no_grad():
        tokens = model.forward_features(x)
        torch.testing.assert_close(tokens, module(x))
    assert model.token_grid(4, 8, 8) == (2, 2, 2)


def test_torchscript_needs_its_input_spec(tmp_path):
    import warnings

    class Bare(nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3, 4))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(Bare()).save(str(tmp_path / "bare.pt"))
    with pytest.raises(VidcacheError, match="embed_dim, num_frames, image_size"):
        create_backbone(f"torchscript:{tmp_path / 'bare.pt'}")
    model = create_backbone(f"torchscript:{tmp_path / 'bare.pt'}", embed_dim=3, num_frames=2, image_size=4)
    assert model.forward_features(torch.ones(1, 3, 2, 4, 4)).shape == (1, 1, 3)
    assert model.token_grid(2, 4, 4) == (1, 1, 1)
