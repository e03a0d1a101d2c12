"""Extraction configs, torch-free (the CLI builds `extract clips` / `extract codes` options from them).

`ClipExtractConfig` drives `vidcache.extract.clips.extract_clips`, `CodeExtractConfig`
`vidcache.extract.codes.extract_codes`; both share the decode options checked by
`vidcache.video.decode_problems`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vidcache.config import field
from vidcache.errors import VidcacheError

DTYPE_NAMES = ("fp32", "fp16", "bf16")  # compute dtypes (`vidcache.extract.clips.DTYPES` maps them to torch)
POOL_RE = re.compile(r"^pool:(\d+),(\d+),(\d+)$")


@dataclass
class ClipExtractConfig:
    """How to turn videos into clip embeddings. Fields marked hashed=False only change speed."""

    backbone: str = field("tiny", help="backbone name or prefix:arg (see `vidcache extract backbones`)")
    backbone_options: dict = field(default_factory=dict, help="keyword options of the backbone factory")
    protocol: str = field("5x3", help="sampling protocol: 1x1, 5x3, 2x3, uniform:C, random:C:seed, "
                                      "vjepa:TxS[:seed], or frames:all / frames:N[:stride] (per-frame patch "
                                      "tokens for dense probes)")
    tokens: str = field("none", help="store patch tokens: none, full, or pool:T,H,W (average-pooled grid)")
    features: list = field(default_factory=lambda: ["mean"],
                           help="named features to store: mean (always, clips/emb), cls, cls+avgpool, lastN, "
                                "lastN+avgpool (docs/store.md; all but mean need a backbone with a CLS token)")
    clip_len: int | None = field(None, help="frames per clip (default: the backbone's)")
    stride: int | None = field(None, help="frame stride within a clip (default: the backbone's)")
    crop_fraction: float = field(1.0, help="evaluation crop side as a fraction of the short side")
    short_side: int | None = field(None, help="frames protocols: resize whole frames to this short side "
                                              "(default: the backbone's image size; DINO uses 480)")
    size_multiple: int | None = field(None, help="frames protocols: floor the long side to a multiple of "
                                                 "this (default 64 as DINO, or the patch size)")
    dtype: str = field("fp32", help="compute dtype: fp32, fp16 or bf16 (autocast; GPU only for fp16)")
    batch_size: int = field(32, help="clips per forward pass", hashed=False)
    workers: int = field(2, help="decode worker processes (0 = decode in the main process)", hashed=False)
    device: str = field("auto", help="auto, cpu, cuda or cuda:N", hashed=False)
    decode_timeout: float = field(300.0, help="seconds one video may take to decode before it is failed",
                                  hashed=False)
    decoder: str = field("auto", help="video decoder: auto (torchcodec, else decord; PyAV fallback), torchcodec, "
                                      "decord or pyav", hashed=False)
    decode_device: str = field("cpu", help="where torchcodec decodes: cpu, or cuda (NVDEC in the main process, "
                                           "frames reach the backbone without leaving the GPU; needs --decoder "
                                           "torchcodec and --workers 0)", hashed=False)
    videos_per_block: int | None = field(None, help="videos per block (default: ~8 MB chunks)", hashed=False)
    trust_checkpoint: bool = field(False, help="allow arbitrary pickles in checkpoints", hashed=False)
    preset: str = field("", help="protocol of record these values came from (vidcache/presets.py); the "
                                 "backbone is checked against what it needs", hashed=False)

    def validate(self) -> list[str]:
        from vidcache.extract.sampling import is_frame_protocol, parse_frame_protocol, parse_protocol
        from vidcache.models.features import parse_feature
        from vidcache.video.decode import decode_problems

        p = []
        try:
            if is_frame_protocol(self.protocol):
                parse_frame_protocol(self.protocol)
                if self.tokens != "full":
                    p.append(f"protocol {self.protocol} stores per-frame patch tokens: pass --tokens full "
                             f"(got {self.tokens!r})")
            else:
                parse_protocol(self.protocol)
                if self.short_side is not None or self.size_multiple is not None:
                    p.append("short_side and size_multiple apply to frames:... protocols only")
        except VidcacheError as e:
            p.append(str(e))
        for name in ("short_side", "size_multiple"):
            v = getattr(self, name)
            if v is not None and v < 1:
                p.append(f"{name} must be >= 1, got {v}")
        for name in self.features:
            try:
                parse_feature(name)
            except VidcacheError as e:
                p.append(str(e))
        if self.tokens not in ("none", "full") and not POOL_RE.match(self.tokens):
            p.append(f"tokens must be none, full or pool:T,H,W (e.g. pool:2,4,4), got {self.tokens!r}")
        if self.dtype not in DTYPE_NAMES:
            p.append(f"dtype must be one of {', '.join(DTYPE_NAMES)}, got {self.dtype!r}")
        for name in ("clip_len", "stride", "videos_per_block"):
            v = getattr(self, name)
            if v is not None and v < 1:
                p.append(f"{name} must be >= 1, got {v}")
        if not 0 < self.crop_fraction <= 1:
            p.append(f"crop_fraction must be in (0, 1], got {self.crop_fraction}")
        if self.batch_size < 1:
            p.append(f"batch_size must be >= 1, got {self.batch_size}")
        if self.preset:
            from vidcache.presets import PRESETS

            if self.preset not in PRESETS:
                p.append(f"unknown preset {self.preset!r}; presets: {', '.join(PRESETS)}")
        return p + decode_problems(self.workers, self.decode_timeout, self.decoder, self.decode_device)


@dataclass
class CodeExtractConfig:
    """How to turn videos into patch codes. Fields marked hashed=False only change speed."""

    codebook: str = field("", help="codebook file from `vidcache codec train` (.npz)")
    fps: float | None = field(None, help="resample to this frame rate (default: the video's own)")
    max_frames: int = field(64, help="frames kept per video (a centred window when the video is longer)")
    workers: int = field(2, help="decode worker processes (0 = in the main process)", hashed=False)
    device: str = field("auto", help="device of the nearest-centroid search: auto, cpu, cuda", hashed=False)
    decode_timeout: float = field(300.0, help="seconds one video may take to decode", hashed=False)
    decoder: str = field("auto", help="auto (torchcodec, else decord; PyAV fallback), torchcodec, decord or pyav",
                         hashed=False)
    videos_per_block: int | None = field(None, help="videos per block (default: ~8 MB chunks)", hashed=False)

    def validate(self) -> list[str]:
        from vidcache.video.decode import decode_problems

        p = []
        if not self.codebook:
            p.append("codebook is required (train one with `vidcache codec train`)")
        if self.fps is not None and self.fps <= 0:
            p.append(f"fps must be > 0, got {self.fps}")
        if self.max_frames < 1:
            p.append(f"max_frames must be >= 1, got {self.max_frames}")
        return p + decode_problems(self.workers, self.decode_timeout, self.decoder)
