"""Protocols of record: the presets' values, pinned against the reference files they cite."""

import json
import os
import subprocess
import sys

import pytest

from vidcache.errors import ConfigError
from vidcache.presets import PRESETS, backbone_problems, get_preset


def test_vjepa_presets_hold_the_jepa_eval_configs():
    """configs/evals/vitl16_k400_16x8x3.yaml and vitl16_ssv2_16x2x3.yaml (facebookresearch/jepa):
    frames_per_clip 16, num_segments 8 / 2, num_views_per_segment 3, frame_step 4, resolution 224,
    attend_across_segments true, num_epochs 20, lr = start_lr 0.001, final_lr 0, warmup 0, wd 0.01,
    batch 4 on 8 x 8 GPUs; eval.py builds AttentiveClassifier(depth=1)."""
    for name, segments in (("vjepa-k400", 8), ("vjepa-ssv2", 2)):
        p = get_preset(name)
        assert p.extract == {"protocol": f"vjepa:{segments}x3:0", "clip_len": 16, "stride": 4, "tokens": "full"}
        assert p.needs == {"image_size": 224, "num_frames": 16}
        c = p.probe_config
        assert (c["layout"], c["depth"], c["lrs"], c["wds"], c["epochs"]) == ("jepa", 1, [0.001], [0.01], 20)
        assert (c["warmup_epochs"], c["final_lr_ratio"], c["batch_size"], c["sample"]) == (0.0, 0.0, 256, "segments")
        assert c["standardize"] is False and p.probe == "attentive"
        # eval.py: init_opt(...) leaves final_wd at its default 1e-6 (CosineWDSchedule from 0.01);
        # run_one_epoch: clip_grad_norm_(classifier.parameters(), 1.0); schedulers step before the batch;
        # weight decay on the non-bias, non-1-D parameters only
        assert (c["final_wd"], c["clip_grad"], c["schedule_rule"], c["decay_vectors"]) == (1e-6, 1.0, "jepa", False)
        assert any(s.endswith(f"_{'k400_16x8x3' if segments == 8 else 'ssv2_16x2x3'}.yaml") for s in p.sources)


def test_vjepa2_presets_hold_the_vjepa2_eval_configs():
    """configs/eval/vitl/k400.yaml and ssv2.yaml (facebookresearch/vjepa2): classifier num_heads 16,
    num_probe_blocks 4, resolution 256, 16 frames x 8 / 2 segments x 3 views at step 4, 20 epochs,
    multihead_kwargs = lr {0.005, 0.003, 0.001, 0.0003, 0.0001} x wd {0.01, 0.1, 0.4, 0.8}, warmup 0,
    final_lr 0, final_weight_decay = weight_decay; eval.py reports the max over its heads."""
    for name, segments in (("vjepa2-k400", 8), ("vjepa2-ssv2", 2)):
        p = get_preset(name)
        c = p.probe_config
        assert (c["layout"], c["depth"], c["num_heads"]) == ("vjepa2", 4, 16)
        assert c["lrs"] == [0.005, 0.003, 0.001, 0.0003, 0.0001] and c["wds"] == [0.01, 0.1, 0.4, 0.8]
        assert len(c["lrs"]) * len(c["wds"]) == 20 and c["report"] == "best-val" and c["epochs"] == 20
        assert p.needs["image_size"] == 256 and p.extract["protocol"] == f"vjepa:{segments}x3:0"
        assert (p.extract["clip_len"], p.extract["stride"]) == (16, 4)
        # final_weight_decay = weight_decay (constant), no clipping, one AdamW group with every parameter
        assert (c["final_wd"], c["clip_grad"], c["schedule_rule"], c["decay_vectors"]) == (None, 0.0, "jepa", True)


def test_dino_presets():
    """eval_knn.py (facebookresearch/dino): nb_knn 10 20 100 200, temperature 0.07, Resize 256 +
    CenterCrop 224, CLS features. dinov2/eval/linear.py: n_last_blocks 1 and 4, avgpool off and on,
    13 learning rates 1e-5 ... 0.1 scaled by batch / 256, SGD momentum 0.9, wd 0, 10 epochs, batch 128."""
    k = get_preset("dino-knn")
    assert k.probe_config["ks"] == [10, 20, 100, 200] and k.probe_config["temperature"] == 0.07
    assert k.extract["crop_fraction"] == 224 / 256 and k.features == ("cls",) and k.needs == {"cls": True}
    lin = get_preset("dinov2-linear")
    assert lin.features == ("cls", "cls+avgpool", "last4", "last4+avgpool")
    base = [1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1]
    assert lin.probe_config["lrs"] == pytest.approx([b * 128 / 256 for b in base])
    c = lin.probe_config
    assert (c["optimizer"], c["momentum"], c["wds"], c["epochs"], c["batch_size"]) == ("sgd", 0.9, [0.0], 10, 128)
    assert c["schedule_rule"] == "torch"  # CosineAnnealingLR stepped after optimizer.step()


def test_every_preset_builds_valid_configs_and_names_its_sources():
    from vidcache.extract.clips import ClipExtractConfig
    from vidcache.probe.run import make_config
    from vidcache.config import check

    for p in PRESETS.values():
        make_config(p.probe, **p.probe_config)
        check(ClipExtractConfig(**p.extract, preset=p.name))
        assert p.sources and all(s.startswith("facebookresearch/") for s in p.sources) and p.cache_differs
    with pytest.raises(ConfigError, match="unknown preset 'vjepa-k40'.*did you mean vjepa-k400"):
        get_preset("vjepa-k40")


def test_backbone_problems_name_what_is_missing():
    class B:
        name, has_cls, image_size, num_frames, tubelet_size, per_frame = "vid", False, 224, 8, 2, False

    (line,) = backbone_problems(get_preset("dino-knn"), B())
    assert "has none" in line
    assert backbone_problems(get_preset("vjepa-k400"), B()) == [
        "preset vjepa-k400 feeds 16-frame clips but vid takes 8 frames (e.g. --backbone-option num_frames=16)"]
    B.per_frame, B.tubelet_size = True, 1  # an image model takes any clip length
    assert backbone_problems(get_preset("vjepa-k400"), B()) == []


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "vidcache", *map(str, args)], capture_output=True, text=True,
                          env=dict(os.environ))


def test_probe_attentive_with_a_preset_from_the_cli(synth_corpus, tmp_path):
    """extract with the preset's protocol (vjepa:2x3), then `probe attentive --preset vjepa-ssv2`:
    the preset's values fill every option not given, and results.json says which preset and report."""
    manifest, _ = synth_corpus
    store = tmp_path / "s.zarr"
    r = _cli("extract", "clips", manifest, "-o", store, "--protocol", "vjepa:2x3", "--tokens", "pool:1,2,2",
             "--workers", "0")
    assert r.returncode == 0, r.stderr
    r = _cli("probe", "attentive", store, "-o", tmp_path / "out", "--preset", "vjepa-ssv2", "--epochs", "2",
             "--num-heads", "4", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert res["preset"] == "vjepa-ssv2" and res["report"] == "best-val" and res["reported"]["split"] == "val"
    assert (cfg["epochs"], cfg["num_heads"], cfg["sample"], cfg["layout"], cfg["lrs"]) == (2, 4, "segments",
                                                                                           "jepa", [0.001])
    assert res["train_samples"] == 3 * res["num_train"]  # one sample per spatial view, 2 segments each
    assert res["warnings"] == [] and "preset vjepa-ssv2" in r.stdout and "best-val" in r.stdout
    # a preset for another probe, and a store without the preset's feature, are refused in one line
    r = _cli("probe", "attentive", store, "-o", tmp_path / "x", "--preset", "dino-knn")
    assert r.returncode == 2 and "configures the knn probe" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = _cli("probe", "knn", store, "-o", tmp_path / "x", "--preset", "dino-knn")
    assert r.returncode == 2 and "has only mean" in r.stderr and "Traceback" not in r.stderr


def test_protocols_doc_lists_every_preset_with_its_sources():
    from pathlib import Path

    doc = (Path(__file__).parents[1] / "docs" / "protocols.md").read_text()
    for p in PRESETS.values():
        assert f"`{p.name}`" in doc
        for src in p.sources:
            assert src.split(": ")[1].split("/")[-1] in doc, (p.name, src)
