"""Protocols of record: the evaluation settings of the reference implementations, by name.

A preset is a set of values copied from one reference's config file or evaluation script (named in
`sources`), for the extraction (`vidcache extract clips --preset NAME`) and for the probe
(`vidcache probe <probe> STORE --preset NAME`). Options given on the command line override a
preset's values. `docs/protocols.md` lists them with what differs on the cache; `cache_differs`
says it per preset. This module holds values only (no torch), so the CLI and every stage can read it.

Reporting: every preset reports as its reference does (`report="best-val"`: the best head's score on
the evaluation split given as val); `--report test` gives vidcache's select-on-val, report-on-test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vidcache.errors import ConfigError

# jepa's frozen eval (evals/video_classification_frozen/eval.py): `init_opt` is called without
# `final_wd`, so its CosineWDSchedule runs from the config's weight_decay to the default final_wd=1e-6;
# `run_one_epoch` clips every step with clip_grad_norm_(classifier.parameters(), 1.0).
JEPA_EVAL_FINAL_WD = 1e-6
JEPA_EVAL_CLIP_GRAD = 1.0
# V-JEPA 2's 20-head grid (configs/eval/vitl/k400.yaml, `multihead_kwargs`): 5 lr x 4 wd, no warm-up,
# cosine to 0, constant weight decay (final_weight_decay = weight_decay); its eval.py puts every
# parameter in one AdamW group (biases and norms decayed too) and does not clip gradients.
VJEPA2_LRS = [0.005, 0.003, 0.001, 0.0003, 0.0001]
VJEPA2_WDS = [0.01, 0.1, 0.4, 0.8]
# DINOv2's linear eval (dinov2/eval/linear.py, `set_defaults`): 13 learning rates, SGD momentum 0.9,
# weight decay 0, cosine to 0 (CosineAnnealingLR, no warm-up), batch 128; `scale_lr` multiplies each
# by batch_size * world_size / 256.
DINOV2_LRS = [1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1]
DINOV2_BATCH = 128


@dataclass(frozen=True)
class Preset:
    name: str
    reproduces: str                  # the paper table the reference's number is in
    sources: tuple[str, ...]         # reference files the values come from (repo: path)
    probe: str                       # the probe command this preset configures
    probe_config: dict               # fields of that probe's config
    extract: dict                    # fields of ClipExtractConfig
    needs: dict = field(default_factory=dict)  # what the backbone must have: cls, image_size, num_frames
    features: tuple[str, ...] = ()   # stored features the probe reads (several: every one is tried)
    cache_differs: str = ""          # what the cached protocol does differently, in one paragraph

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "reproduces": self.reproduces, "sources": list(self.sources),
                "probe": self.probe, "probe_config": dict(self.probe_config), "extract": dict(self.extract),
                "needs": dict(self.needs), "features": list(self.features)}


# What jepa's and vjepa2's frozen evals share: AdamW, 20 epochs, no warm-up, cosine to 0 with both
# schedulers stepped before each batch, batch 4 x 64 GPUs, no feature standardisation, segments joined
# per spatial view (attend_across_segments), the best head's score on the eval split.
_FROZEN_EVAL = {"optimizer": "adamw", "epochs": 20, "warmup_epochs": 0.0, "final_lr_ratio": 0.0,
                "schedule_rule": "jepa", "batch_size": 256, "standardize": False, "sample": "segments",
                "report": "best-val"}


def _vjepa(name: str, segments: int, yaml: str, table: str) -> Preset:
    """jepa's frozen attentive evaluation: one attentive head (depth 1, jepa layout), lr 1e-3,
    wd 0.01 by cosine to 1e-6, gradients clipped at norm 1, 20 epochs, no warm-up, cosine to 0, both
    schedules stepped before each iteration; batch 4 per GPU on 8 nodes x 8 GPUs = 256."""
    return Preset(
        name=name, reproduces=table,
        sources=(f"facebookresearch/jepa: configs/evals/{yaml}",
                 "facebookresearch/jepa: evals/video_classification_frozen/eval.py",
                 "facebookresearch/jepa: evals/video_classification_frozen/utils.py"),
        probe="attentive",
        probe_config={**_FROZEN_EVAL, "layout": "jepa", "depth": 1, "lrs": [0.001], "wds": [0.01],
                      "final_wd": JEPA_EVAL_FINAL_WD, "clip_grad": JEPA_EVAL_CLIP_GRAD, "decay_vectors": False},
        extract={"protocol": f"vjepa:{segments}x3:0", "clip_len": 16, "stride": 4, "tokens": "full"},
        needs={"image_size": 224, "num_frames": 16},
        cache_differs=("Training sees the 3 cached eval views of each segment (jepa trains on one view "
                       "per segment with RandomResizedCrop(0.08-1), RandAugment rand-m7-n4 and random "
                       "erasing 0.25, redrawn every epoch; cached augmented views: a `vjepa-aug:8x4` store as --train-store). "
                       "jepa trains under fp16 autocast with a GradScaler; vidcache in float32. jepa redraws the "
                       "eval windows every epoch; the cache holds one seeded draw. num_heads is the "
                       "backbone's (16 for ViT-L/H): give --num-heads."),
    )


def _vjepa2(name: str, segments: int, yaml: str, table: str) -> Preset:
    """V-JEPA 2's frozen evaluation: 4-block attentive probe (vjepa2 layout), 16 heads, the 20-head
    grid, 20 epochs, resolution 256 for ViT-L (384 for ViT-g/384), best head on val."""
    return Preset(
        name=name, reproduces=table,
        sources=(f"facebookresearch/vjepa2: configs/eval/vitl/{yaml}",
                 "facebookresearch/vjepa2: evals/video_classification_frozen/eval.py",
                 "facebookresearch/vjepa2: src/models/attentive_pooler.py"),
        probe="attentive",
        probe_config={**_FROZEN_EVAL, "layout": "vjepa2", "depth": 4, "num_heads": 16, "lrs": list(VJEPA2_LRS),
                      "wds": list(VJEPA2_WDS), "final_wd": None, "clip_grad": 0.0, "decay_vectors": True},
        extract={"protocol": f"vjepa:{segments}x3:0", "clip_len": 16, "stride": 4, "tokens": "full"},
        needs={"image_size": 256, "num_frames": 16},
        cache_differs=("Training sees the 3 cached eval views of each segment (the reference trains on one "
                       "augmented view per segment, RandomResizedCrop(0.08-1), RandAugment, random erasing). "
                       "The reference reports the best of its 20 heads on val each epoch (`_agg_top1.max()`); "
                       "vidcache reports the best head at the end of training. No gradient clipping in "
                       "either. The ViT-g/384 configs (configs/eval/vitg-384/) differ only in resolution "
                       "384 (and SSv2 64 frames at step 2): override --protocol/--clip-len/--stride."),
    )


PRESETS: dict[str, Preset] = {p.name: p for p in (
    _vjepa("vjepa-k400", 8, "vitl16_k400_16x8x3.yaml",
           "V-JEPA (Bardes et al., 2024), frozen evaluation, Kinetics-400 attentive probe (16x8x3)"),
    _vjepa("vjepa-ssv2", 2, "vitl16_ssv2_16x2x3.yaml",
           "V-JEPA (Bardes et al., 2024), frozen evaluation, Something-Something v2 attentive probe (16x2x3)"),
    _vjepa2("vjepa2-k400", 8, "k400.yaml",
            "V-JEPA 2 (Assran et al., 2025), frozen attentive-probe classification, Kinetics-400 (16x8x3)"),
    _vjepa2("vjepa2-ssv2", 2, "ssv2.yaml",
            "V-JEPA 2 (Assran et al., 2025), frozen attentive-probe classification, SSv2 (16x2x3)"),
    Preset(
        name="dino-knn",
        reproduces="DINO (Caron et al., 2021), weighted k-NN classification on ImageNet (k = 20 reported)",
        sources=("facebookresearch/dino: eval_knn.py", "facebookresearch/dinov2: dinov2/eval/knn.py"),
        probe="knn",
        probe_config={"ks": [10, 20, 100, 200], "temperature": 0.07, "views": "mean", "report": "best-val"},
        extract={"protocol": "1x1", "crop_fraction": 0.875, "features": ["cls"]},
        needs={"cls": True},
        features=("cls",),
        cache_differs=("The reference resizes the short side to 256 (bicubic) and centre-crops 224; vidcache "
                       "cuts the centre 224/256 of the short side from the original frame and resizes it "
                       "(bilinear, antialiased). On video the clip's CLS is the mean of its frames' CLS. "
                       "DINO reports each k; vidcache also selects k on val."),
    ),
    Preset(
        name="dinov2-linear",
        reproduces="DINOv2 (Oquab et al., 2024), linear evaluation on ImageNet-1k (best of its linear heads)",
        sources=("facebookresearch/dinov2: dinov2/eval/linear.py",),
        probe="linear",
        probe_config={"optimizer": "sgd", "momentum": 0.9, "wds": [0.0],
                      "lrs": [lr * DINOV2_BATCH / 256.0 for lr in DINOV2_LRS], "epochs": 10,
                      "warmup_epochs": 0.0, "final_lr_ratio": 0.0, "batch_size": DINOV2_BATCH,
                      "standardize": False, "pool": "none", "report": "best-val", "schedule_rule": "torch"},
        extract={"protocol": "1x1", "crop_fraction": 0.875,
                 "features": ["mean", "cls", "cls+avgpool", "last4", "last4+avgpool"]},
        needs={"cls": True},
        features=("cls", "cls+avgpool", "last4", "last4+avgpool"),
        cache_differs=("The reference trains all 52 heads (n_last_blocks 1 and 4 x avgpool off/on x 13 lrs) "
                       "for 12,500 iterations on RandomResizedCrop + flip views; vidcache trains the 13-lr "
                       "grid once per stored feature for 10 epochs over the cached centre crops, and picks "
                       "the best feature and head on val. Learning rates are scaled as `scale_lr` does for "
                       "one device at batch 128 (x 0.5)."),
    ),
)}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        import difflib

        close = difflib.get_close_matches(name, list(PRESETS), n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError([f"unknown preset {name!r}{hint}; presets: {', '.join(PRESETS)}"], "preset")
    return PRESETS[name]


def backbone_problems(preset: Preset, backbone: Any, clip_len: int | None = None) -> list[str]:
    """What the backbone lacks for this preset (empty when it has everything), one line each."""
    p = []
    name = getattr(backbone, "name", "") or "the backbone"
    if preset.needs.get("cls") and not getattr(backbone, "has_cls", False):
        p.append(f"preset {preset.name} reads the CLS token but {name} has none (VideoMAE, V-JEPA and the "
                 f"built-in video ViTs have no CLS); use an image ViT such as timm:vit_small_patch14_dinov2 "
                 f"or hf:facebook/dinov2-small")
    size = preset.needs.get("image_size")
    if size and int(getattr(backbone, "image_size", 0)) != size:
        p.append(f"preset {preset.name} evaluates at {size} px but {name} takes "
                 f"{getattr(backbone, 'image_size', '?')} px; create it at {size} (e.g. --backbone-option "
                 f"image_size={size}) or drop the preset")
    frames = preset.needs.get("num_frames")
    per_frame = int(getattr(backbone, "tubelet_size", 1)) == 1 and getattr(backbone, "per_frame", False)
    if frames and not per_frame and int(getattr(backbone, "num_frames", frames)) != frames:
        p.append(f"preset {preset.name} feeds {frames}-frame clips but {name} takes "
                 f"{getattr(backbone, 'num_frames', '?')} frames (e.g. --backbone-option num_frames={frames})")
    return p
