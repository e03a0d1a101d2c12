"""vidcache.pretrain: encoder pretraining from code stores (clips decoded on the device).

    from vidcache.pretrain import PretrainConfig, TDVConfig, pretrain
    pretrain(PretrainConfig(codes="codes.zarr", out="run", model="vit_micro", steps=300, batch_size=8))
    # -> run/ckpt_000300.pt, usable as the backbone "vidcache:run/ckpt_000300.pt"
    pretrain(TDVConfig(codes="codes.zarr", out="tdv_run"))   # TDV: a per-frame encoder (+ "#motion")
"""

from vidcache._lazy import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "vidcache.pretrain.loader": ["ClipDecoder", "ClipSampling", "CodeClipDataset", "CodeSource", "Mp4ClipDataset",
        "PixelDecoder", "StreamSampler", "crop_codes", "make_loader"],
    "vidcache.pretrain.masks": ["MultiBlockMasks", "vjepa_mask_specs"],
    "vidcache.pretrain.objective": ["Objective"],
    "vidcache.pretrain.tdv": ["TDV", "TDVObjective", "build_tdv"],
    "vidcache.pretrain.config": ["MaskSpec", "PretrainConfig", "RunConfig"],
    "vidcache.pretrain.tdv_config": ["TDVConfig"],
    "vidcache.pretrain.train": ["Trainer", "latest_checkpoint", "list_checkpoints", "pretrain"],
    "vidcache.pretrain.vjepa": ["VJEPA", "Predictor", "VJEPAObjective", "build_vjepa", "ema_update"],
})
