import json

import pytest
import torch

from vidcache.errors import VidcacheError
from vidcache.models import create_backbone

transformers = pytest.importorskip("transformers")
timm = pytest.importorskip("timm")

SMALL = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)


def _clip(T, S, B=2):
    return torch.randn(B, 3, T, S, S, generator=torch.Generator().manual_seed(0))


def _save(model, path):
    model.eval().save_pretrained(str(path))
    return f"hf:{path}"


def test_hf_videomae(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.VideoMAEConfig(image_size=32, patch_size=16, num_frames=4, tubelet_size=2,
                                      use_mean_pooling=True, **SMALL)
    ref = transformers.VideoMAEModel(cfg).eval()
    name = _save(ref, tmp_path)
    model = create_backbone(name)
    assert (model.embed_dim, model.num_frames, model.image_size, model.tubelet_size) == (32, 4, 32, 2)
    assert model.mean == pytest.approx((0.485, 0.456, 0.406))
    x = _clip(4, 32)
    with torch.no_grad():
        tokens = model.forward_features(x)
        torch.testing.assert_close(tokens, ref(pixel_values=x.transpose(1, 2)).last_hidden_state)
    assert tokens.shape[1] == 2 * 2 * 2
    with pytest.raises(VidcacheError, match="only takes 4 frames"):
        create_backbone(name, num_frames=8)


@pytest.mark.skipif(not hasattr(transformers, "VJEPA2Model"), reason="transformers without V-JEPA 2")
def test_hf_vjepa2(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.VJEPA2Config(crop_size=32, frames_per_clip=4, patch_size=16, tubelet_size=2,
                                    hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                    pred_hidden_size=32, pred_num_hidden_layers=1, pred_num_attention_heads=2,
                                    num_pooler_layers=1)
    ref = transformers.VJEPA2Model(cfg).eval()
    model = create_backbone(_save(ref, tmp_path), num_frames=6)
    assert (model.num_frames, model.image_size, model.tubelet_size) == (6, 32, 2)
    x = _clip(6, 32)  # RoPE positions: other clip lengths work
    with torch.no_grad():
        tokens = model.forward_features(x)
        expected = ref(pixel_values_videos=x.transpose(1, 2), skip_predictor=True).last_hidden_state
    torch.testing.assert_close(tokens, expected)
    assert tokens.shape == (2, 3 * 2 * 2, 32)


def _per_frame_reference(ref, x, prefix, **kw):
    with torch.no_grad():
        return torch.cat([ref(pixel_values=x[:, :, t], **kw).last_hidden_state[:, prefix:]
                          for t in range(x.shape[2])], dim=1)


IMAGE_MODELS = [
    ("Dinov2Config", "Dinov2Model", {}, 1),
    ("Dinov2WithRegistersConfig", "Dinov2WithRegistersModel", {"num_register_tokens": 2}, 3),
    ("CLIPVisionConfig", "CLIPVisionModel", {"projection_dim": 16}, 1),
    ("SiglipVisionConfig", "SiglipVisionModel", {}, 0),
]


@pytest.mark.parametrize("config_cls,model_cls,extra,prefix", IMAGE_MODELS, ids=[m[1] for m in IMAGE_MODELS])
def test_hf_image_models_run_per_frame(tmp_path, config_cls, model_cls, extra, prefix):
    if not hasattr(transformers, model_cls):
        pytest.skip(f"transformers without {model_cls}")
    torch.manual_seed(0)
    cfg = getattr(transformers, config_cls)(image_size=32, patch_size=8, **SMALL, **extra)
    ref = getattr(transformers, model_cls)(cfg).eval()
    model = create_backbone(_save(ref, tmp_path), num_frames=3)
    assert (model.embed_dim, model.num_frames, model.image_size, model.patch_size) == (32, 3, 32, 8)
    x = _clip(3, 32)
    with torch.no_grad():
        tokens = model.forward_features(x)
    torch.testing.assert_close(tokens, _per_frame_reference(ref, x, prefix))
    assert tokens.shape == (2, 3 * 4 * 4, 32) and model.token_grid(3, 32, 32) == (3, 4, 4)


def test_hf_processor_config_sets_normalisation_and_size(tmp_path):
    torch.manual_seed(0)
    ref = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(image_size=32, patch_size=8, **SMALL)).eval()
    name = _save(ref, tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.1, 0.2, 0.3], "image_std": [0.4, 0.5, 0.6], "crop_size": {"height": 48, "width": 48}}))
    model = create_backbone(name, num_frames=2)
    assert model.mean == (0.1, 0.2, 0.3) and model.std == (0.4, 0.5, 0.6) and model.image_size == 48
    x = _clip(2, 48)
    with torch.no_grad():
        tokens = model.forward_features(x)
    # A crop larger than CLIP's native table is run with interpolated positions.
    torch.testing.assert_close(tokens, _per_frame_reference(ref, x, 1, interpolate_pos_encoding=True))
    assert tokens.shape == (2, 2 * 6 * 6, 32)


def test_hf_errors(tmp_path, monkeypatch):
    with pytest.raises(VidcacheError, match="does not exist"):
        create_backbone(f"hf:{tmp_path / 'missing'}")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(VidcacheError, match="HF_HUB_OFFLINE"):
        create_backbone("hf:no-such-org/no-such-model")
    transformers.BertConfig(**SMALL).save_pretrained(str(tmp_path / "bert"))
    with pytest.raises(VidcacheError, match="model type 'bert'.*supported"):
        create_backbone(f"hf:{tmp_path / 'bert'}")


TIMM_KW = dict(img_size=32, depth=1)


def test_timm_weights_file_round_trip(tmp_path):
    torch.manual_seed(0)
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, **TIMM_KW).eval()
    with torch.no_grad():
        ref.pos_embed.normal_()  # differ from the default init, so a skipped load would show
    path = tmp_path / "vit.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, path)
    model = create_backbone(f"timm:vit_tiny_patch16_224@{path}", num_frames=2, **TIMM_KW)
    assert (model.embed_dim, model.image_size, model.patch_size) == (192, 32, 16)
    assert model.mean == pytest.approx((0.5, 0.5, 0.5))
    x = _clip(2, 32)
    with torch.no_grad():
        tokens = model.forward_features(x)
        expected = torch.cat([ref.forward_features(x[:, :, t])[:, 1:] for t in range(2)], dim=1)
    torch.testing.assert_close(tokens, expected)
    assert tokens.shape == (2, 2 * 2 * 2, 192) and model.token_grid(2, 32, 32) == (2, 2, 2)


def test_timm_refuses_mismatched_weights_and_unknown_models(tmp_path):
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, **TIMM_KW)
    path = tmp_path / "vit.pth"
    torch.save(ref.state_dict(), path)
    with pytest.raises(VidcacheError, match=r"missing keys: blocks\.1\."):
        create_backbone(f"timm:vit_tiny_patch16_224@{path}", img_size=32, depth=2)
    with pytest.raises(VidcacheError, match="did you mean.*vit_tiny_patch16_224"):
        create_backbone("timm:vit_tiny_patch16_22")


def test_timm_convnet_tokens_follow_the_feature_map():
    model = create_backbone("timm:test_resnet", pretrained=False, num_frames=2)
    x = _clip(2, 40)
    with torch.no_grad():
        tokens = model.forward_features(x)
        fmap = model.model.forward_features(x[:, :, 1])
    t, h, w = model.token_grid(2, 40, 40)
    assert tokens.shape == (2, t * h * w, model.embed_dim) and (h, w) == tuple(fmap.shape[-2:])
    torch.testing.assert_close(tokens[:, h * w:], fmap.flatten(2).transpose(1, 2))


def test_hf_full_clip_checkpoint_uses_its_vision_tower(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.CLIPConfig(vision_config=dict(image_size=32, patch_size=8, **SMALL),
                                  text_config=dict(vocab_size=100, **SMALL), projection_dim=16)
    full = transformers.CLIPModel(cfg).eval()
    model = create_backbone(_save(full, tmp_path), num_frames=2)
    assert model.embed_dim == 32 and model.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    x = _clip(2, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), _per_frame_reference(full.vision_model, x, 1))
