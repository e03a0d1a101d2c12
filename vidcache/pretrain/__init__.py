"""vidcache.pretrain: encoder pretraining from code stores (clips decoded on the device).

    from vidcache.pretrain import PretrainConfig, TDVConfig, pretrain
    pretrain(PretrainConfig(codes="codes.zarr", out="run", model="vit_micro", steps=300, batch_size=8))
    # -> run/ckpt_000300.pt, usable as the backbone "vidcache:run/ckpt_000300.pt"
    pretrain(TDVConfig(codes="codes.zarr", out="tdv_run"))   # TDV: a per-frame encoder (+ "#motion")
"""

from vidcache.pretrain.loader import (
    ClipDecoder,
    ClipSampling,
    CodeClipDataset,
    CodeSource,
    Mp4ClipDataset,
    PixelDecoder,
    StreamSampler,
    crop_codes,
    make_loader,
)
from vidcache.pretrain.masks import MaskSpec, MultiBlockMasks, vjepa_mask_specs
from vidcache.pretrain.objective import Objective
from vidcache.pretrain.tdv import TDV, TDVObjective, build_tdv
from vidcache.pretrain.tdv_config import TDVConfig
from vidcache.pretrain.train import PretrainConfig, Trainer, latest_checkpoint, list_checkpoints, pretrain
from vidcache.pretrain.vjepa import VJEPA, Predictor, VJEPAObjective, build_vjepa, ema_update

__all__ = [
    "ClipDecoder", "ClipSampling", "CodeClipDataset", "CodeSource", "MaskSpec", "Mp4ClipDataset", "MultiBlockMasks",
    "PixelDecoder", "Predictor", "PretrainConfig", "StreamSampler", "Trainer", "VJEPA", "build_vjepa", "crop_codes",
    "ema_update", "latest_checkpoint", "list_checkpoints", "make_loader", "pretrain", "vjepa_mask_specs",
    "Objective", "TDV", "TDVConfig", "TDVObjective", "VJEPAObjective", "build_tdv",
]
