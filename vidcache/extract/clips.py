"""`vidcache extract clips`: decode videos once, run a frozen backbone, store clip embeddings.

Per video, the protocol plans C clips (frames + crop box); decode workers decode the distinct
frames once and crop/resize/normalise them (on the GPU instead, when there is one); the main
process runs the backbone on batches of clips and writes, per block of videos, `clips/emb`
`[V, C, D]`, `clips/box` `[V, C, 6]` and optionally `clips/tokens` (all tokens, or average-pooled
to a `T x H x W` grid).

Batches are formed in row order and never straddle two blocks, so a resumed block is computed
exactly as the first time: a killed and resumed run gives the same store, bit for bit.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vidcache.cache import ArraySpec
from vidcache.config import check, to_dict
from vidcache.device import resolve_device
from vidcache.distributed import DistInfo, destroy_distributed, init_distributed
from vidcache.errors import ConfigError, VidcacheError
from vidcache.extract.config import DTYPE_NAMES, POOL_RE, ClipExtractConfig  # noqa: F401  (re-exported)
from vidcache.extract.runner import Block, Job, Summary, run_extractions
from vidcache.extract.sampling import (
    boxes,
    frames_needed,
    is_frame_protocol,
    parse_protocol,
    plan_clips,
)
from vidcache.extract.transforms import video_clips_tensor
from vidcache.models.features import cls_blocks_needed, compute_features, feature_dim, feature_key
from vidcache.video.decode import open_video

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}  # keys: DTYPE_NAMES


@dataclass
class ClipStoreConfig:
    """What a clip store's config_hash covers: the resolved extraction, including weights digest."""

    extract: dict
    backbone: dict  # Backbone.describe(): name, input spec, mean/std, weights digest
    clip_len: int
    stride: int
    image_size: int
    store_dtype: str = "float16"


class ClipWorker:
    """Runs in a decode worker: one video -> its clips (normalised on CPU, or raw frames for the GPU)."""

    def __init__(self, protocol: str, clip_len: int, stride: int, size: int, mean, std,
                 crop_fraction: float, decoder: str, transform_in_worker: bool, decode_device: str = "cpu"):
        self.protocol, self.clip_len, self.stride = protocol, clip_len, stride
        self.size, self.mean, self.std = size, tuple(mean), tuple(std)
        self.crop_fraction, self.decoder = crop_fraction, decoder
        self.transform_in_worker = transform_in_worker
        self.decode_device = decode_device

    def __call__(self, row: int, path: str) -> dict:
        with open_video(path, backend=self.decoder, device=self.decode_device) as video:
            meta = {"num_frames": video.num_frames, "fps": video.fps, "height": video.height,
                    "width": video.width}
            specs = plan_clips(self.protocol, video.num_frames, video.height, video.width, self.clip_len,
                               self.stride, crop_size_hint=self.crop_fraction, video_index=row, size=self.size)
            unique, _ = frames_needed(specs)
            if self.decode_device != "cpu":  # NVDEC: frames stay on the GPU, the job transforms them there
                frames = video.get_frames_tensor(unique.tolist())
            else:
                frames = video.get_frames(unique.tolist())
        out = {"meta": meta, "box": boxes(specs), "num_clips": len(specs)}
        if self.transform_in_worker:
            out["clips"] = video_clips_tensor(frames, specs, self.size, self.mean, self.std)
        elif isinstance(frames, torch.Tensor):
            out["frames"], out["specs"] = frames, specs
        else:
            out["frames"], out["specs"] = torch.from_numpy(np.ascontiguousarray(frames)), specs
        return out


class ClipJob(Job):
    """Main-process side: batches clips through the backbone and assembles each block."""

    kind = "clips"

    def __init__(self, cfg: ClipExtractConfig, backbone, device: torch.device):
        self.cfg, self.backbone, self.device = cfg, backbone, device
        self.protocol = parse_protocol(cfg.protocol)
        self.C = self.protocol.num_clips
        self.clip_len = int(cfg.clip_len or backbone.num_frames)
        self.stride = int(cfg.stride or backbone.frame_stride)
        self.size = int(backbone.image_size)
        self.D = int(backbone.embed_dim)
        self.compute_dtype = DTYPES[cfg.dtype]
        self.token_grid = backbone.token_grid(self.clip_len, self.size, self.size)
        m = POOL_RE.match(cfg.tokens)
        self.token_pool = tuple(int(x) for x in m.groups()) if m else None
        if self.token_pool and any(a > b for a, b in zip(self.token_pool, self.token_grid)):
            raise ConfigError([f"tokens {cfg.tokens} is finer than the backbone's token grid "
                               f"{'x'.join(map(str, self.token_grid))}"], "extract config")
        self.L = (int(np.prod(self.token_pool)) if self.token_pool else
                  int(np.prod(self.token_grid)) if cfg.tokens == "full" else 0)
        if cfg.preset:
            from vidcache.presets import backbone_problems, get_preset

            problems = backbone_problems(get_preset(cfg.preset), backbone, self.clip_len)
            if problems:
                raise ConfigError(problems, "extract config")
        self.features = [n for n in dict.fromkeys(cfg.features) if n != "mean"]
        self.cls_blocks = cls_blocks_needed(self.features)
        if self.cls_blocks and not getattr(backbone, "has_cls", False):
            raise ConfigError([f"features {', '.join(self.features)} need a CLS token but "
                               f"{backbone.name or cfg.backbone} has none (VideoMAE, V-JEPA and the built-in "
                               f"video ViTs have no CLS; TDV checkpoints give theirs with feature=mean, not "
                               f"feature=cls or cls_concat); store only 'mean' or use an image ViT"], "extract config")

    # -- store description
    def store_config(self) -> ClipStoreConfig:
        from vidcache.config import hashed_dict

        extract = hashed_dict(self.cfg)
        if extract.get("features") == ["mean"]:  # a store of the default features hashes as before they existed
            del extract["features"]
        return ClipStoreConfig(extract=extract, backbone=self.backbone.describe(),
                               clip_len=self.clip_len, stride=self.stride, image_size=self.size)

    def arrays(self) -> dict[str, ArraySpec]:
        arrays = {"clips/emb": ArraySpec((self.C, self.D), "float16"),
                  "clips/box": ArraySpec((self.C, 6), "float32")}
        if self.L:
            arrays["clips/tokens"] = ArraySpec((self.C, self.L, self.D), "float16", videos_per_chunk=1)
        for name in self.features:
            arrays[feature_key(name)] = ArraySpec((self.C, feature_dim(name, self.D)), "float16")
        return arrays

    def store_attrs(self) -> dict:
        from vidcache.models.flops import count_flops

        attrs = {"run_config": to_dict(self.cfg), "protocol": str(self.protocol), "num_clips": self.C,
                 "embed_dim": self.D, "token_grid": list(self.token_pool or self.token_grid),
                 "tokens": self.cfg.tokens, "features": ["mean", *self.features],
                 "has_cls": bool(getattr(self.backbone, "has_cls", False))}
        try:
            attrs["flops_per_clip"] = count_flops(self.backbone, (1, 3, self.clip_len, self.size, self.size))
        except Exception as e:  # some scripted models cannot be traced by the counter; not fatal
            attrs["flops_per_clip"] = None
            attrs["flops_error"] = f"{type(e).__name__}: {e}"[:200]
        return attrs

    def worker_fn(self) -> ClipWorker:
        return ClipWorker(str(self.protocol), self.clip_len, self.stride, self.size, self.backbone.mean,
                          self.backbone.std, self.cfg.crop_fraction, self.cfg.decoder,
                          transform_in_worker=self.device.type == "cpu",
                          decode_device=str(self.device) if self.cfg.decode_device == "cuda" else "cpu")

    # -- block assembly
    def begin_block(self, start: int, stop: int) -> None:
        n = stop - start
        self.start = start
        self.emb = np.zeros((n, self.C, self.D), np.float16)
        self.box = np.zeros((n, self.C, 6), np.float32)
        self.tok = np.zeros((n, self.C, self.L, self.D), np.float16) if self.L else None
        self.feat = {name: np.zeros((n, self.C, feature_dim(name, self.D)), np.float16) for name in self.features}
        self.pending: list[tuple[int, torch.Tensor]] = []  # (local row, clips [C, 3, T, S, S])
        self.pending_clips = 0

    def add(self, row: int, payload: dict | None) -> None:
        if payload is None:
            return
        if "clips" in payload:
            clips = payload["clips"]
        else:
            clips = video_clips_tensor(payload["frames"], payload["specs"], self.size, self.backbone.mean,
                                       self.backbone.std, device=self.device)
        if clips.shape[0] != self.C:
            raise VidcacheError(f"expected {self.C} clips, got {clips.shape[0]}")
        self.box[row - self.start] = payload["box"]
        self.pending.append((row - self.start, clips))
        self.pending_clips += self.C
        while self.pending_clips >= self.cfg.batch_size:
            self._run(self.cfg.batch_size)

    def end_block(self) -> Block:
        while self.pending_clips:
            self._run(min(self.cfg.batch_size, self.pending_clips))
        data = {"clips/emb": self.emb, "clips/box": self.box}
        if self.L:
            data["clips/tokens"] = self.tok
        for name, values in self.feat.items():
            data[feature_key(name)] = values
        return Block(data)

    def _run(self, n: int) -> None:
        """Forward the first n pending clips (in row order) and scatter outputs to their rows."""
        parts, owners, taken = [], [], 0
        while taken < n:
            local, clips = self.pending[0]
            k = min(n - taken, clips.shape[0])
            first = self.C - clips.shape[0]  # clips of this video already done
            parts.append(clips[:k])
            owners += [(local, first + i) for i in range(k)]
            if k == clips.shape[0]:
                self.pending.pop(0)
            else:
                self.pending[0] = (local, clips[k:])
            taken += k
        self.pending_clips -= n
        x = torch.cat(parts).to(self.device, non_blocking=True)
        emb, tok, feats = self.forward(x)
        rows = np.array([o[0] for o in owners])
        cols = np.array([o[1] for o in owners])
        self.emb[rows, cols] = emb
        if self.tok is not None:
            self.tok[rows, cols] = tok
        for name, values in feats.items():
            self.feat[name][rows, cols] = values

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None, dict[str, np.ndarray]]:
        use_autocast = self.compute_dtype != torch.float32
        ctx = (torch.autocast(self.device.type, dtype=self.compute_dtype) if use_autocast
               else contextlib.nullcontext())
        with ctx:
            cls = None
            if self.cls_blocks:  # one forward gives the tokens and the CLS of the last blocks
                tokens, cls = self.backbone.forward_with_cls(x, self.cls_blocks)
            else:
                tokens = self.backbone.forward_features(x)
            emb = self.backbone.pool(tokens)
            feats = compute_features(self.features, tokens, emb, cls) if self.features else {}
        feats = {k: v.float().cpu().numpy().astype(np.float16) for k, v in feats.items()}
        tok = None
        if self.L:
            if self.token_pool:
                B, L, D = tokens.shape
                t, h, w = self.token_grid
                grid = tokens.float().reshape(B, t, h, w, D).permute(0, 4, 1, 2, 3)
                tokens = F.adaptive_avg_pool3d(grid, self.token_pool).flatten(2).transpose(1, 2)
            tok = tokens.float().cpu().numpy().astype(np.float16)
        return emb.float().cpu().numpy().astype(np.float16), tok, feats


def apply_preset(values: dict, preset: str) -> dict:
    """ClipExtractConfig fields: the preset's extraction values under the given ones."""
    from vidcache.presets import get_preset

    return {**get_preset(preset).extract, **values, "preset": preset}


def _frame_job(cfg: ClipExtractConfig, backbone, device: torch.device, manifest):
    """A frame-token job, its store sized by probing the manifest's videos (extract/frames.py).

    Without a manifest the job only describes its store (`store_config`, for hashes), unsized."""
    from vidcache.extract.frames import FrameJob, default_multiple, probe_sizes

    if manifest is None:
        return FrameJob(cfg, backbone, device, (1, 1, 1))
    short = int(cfg.short_side or backbone.image_size)
    multiple = int(cfg.size_multiple or default_multiple(int(backbone.patch_size)))
    sizes = probe_sizes(manifest, cfg.protocol, short, multiple, decoder=cfg.decoder, workers=cfg.workers,
                        timeout_s=cfg.decode_timeout)
    return FrameJob(cfg, backbone, device, sizes)


def make_job(cfg: ClipExtractConfig, backbone, device: torch.device, manifest=None):
    """The extraction job of `cfg`: a FrameJob for frames:... protocols (sized from `manifest`), else a ClipJob."""
    if is_frame_protocol(cfg.protocol):
        return _frame_job(cfg, backbone, device, manifest)
    return ClipJob(cfg, backbone, device)


def extract_clips(manifest, out: str, cfg: ClipExtractConfig, *, overwrite: bool = False, progress=None,
                  backbone=None, storage_options: dict | None = None, start_method: str | None = None) -> Summary:
    """Extract clip embeddings of every video of `manifest` into the clip store at `out`.

    Resumes an existing store made with the same config; one made with another config is refused
    (naming the differing fields) unless `overwrite`. Under torchrun, each rank does its own blocks.
    """
    return extract_clips_many(manifest, [out], cfg, [backbone if backbone is not None else cfg.backbone],
                              overwrite=overwrite, progress=progress, storage_options=storage_options,
                              start_method=start_method)[0]


def preprocess_key(job: ClipJob) -> tuple:
    """What decoding + transforming a video depends on: jobs with equal keys can share one decode."""
    return tuple(sorted(vars(job.worker_fn()).items()))


def extract_clips_many(manifest, outs: list[str], cfg: ClipExtractConfig, backbones: list, *,
                       overwrite: bool = False, progress=None, storage_options: dict | None = None,
                       start_method: str | None = None) -> list[Summary]:
    """Extract several backbones into their own stores (`outs[i]` for `backbones[i]`), decoding once.

    `backbones` holds names (created with `cfg.backbone_options`) or Backbone objects. Backbones that
    preprocess alike (clip length, stride, image size, mean/std) share one decode pass; the others
    form further passes. `cfg.backbone` is replaced by each backbone's name in its store's config.
    Returns one Summary per backbone, in order.
    """
    import dataclasses

    from vidcache.models import create_backbone

    check(cfg, "extract config")
    if len(outs) != len(backbones) or not backbones:
        raise ConfigError([f"give one output store per backbone (got {len(backbones)} backbones and "
                           f"{len(outs)} outputs)"], "extract config")
    dist = DistInfo.from_env()
    device = resolve_device(cfg.device, dist.local_rank)
    if cfg.dtype == "fp16" and device.type == "cpu":
        raise ConfigError(["dtype fp16 needs a GPU; use fp32 or bf16 on the CPU"], "extract config")
    if cfg.decode_device == "cuda" and device.type != "cuda":
        raise ConfigError([f"decode_device cuda needs the backbone on a GPU too (device resolves to {device})"],
                          "extract config")
    created = init_distributed(dist, device)
    try:
        jobs = []
        for bb in backbones:
            if isinstance(bb, str):
                options = dict(cfg.backbone_options)
                if cfg.trust_checkpoint:
                    options["trust_checkpoint"] = True
                bb = create_backbone(bb, **options)
            bb = bb.to(device).eval()
            jcfg = dataclasses.replace(cfg, backbone=bb.name or cfg.backbone)
            jobs.append(make_job(jcfg, bb, device, manifest))
        groups: dict[tuple, list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault(preprocess_key(job), []).append(i)
        summaries: list[Summary | None] = [None] * len(jobs)
        for idx in groups.values():
            block = cfg.videos_per_block or jobs[idx[0]].suggested_block()
            got = run_extractions([jobs[i] for i in idx], manifest, [str(outs[i]) for i in idx],
                                  workers=cfg.workers, timeout_s=cfg.decode_timeout, overwrite=overwrite,
                                  videos_per_block=block, progress=progress, dist=dist,
                                  storage_options=storage_options, start_method=start_method)
            for i, s in zip(idx, got):
                summaries[i] = s
        return summaries
    finally:
        destroy_distributed(created)

