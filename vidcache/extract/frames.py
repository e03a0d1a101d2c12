"""Frame-token stores: `vidcache extract clips --protocol frames:all --tokens full`.

For dense evaluation (label propagation, retrieval, linear segmentation; `vidcache.dense`) a store
keeps every selected frame's patch tokens at their spatial grid instead of pooled clips:

- `clips/frame_tokens` float16 `[V, F, h, w, D]`: token frame f of video v at grid cell (i, j);
- `clips/frame_index` int32 `[V, F]`: the video frame each token frame starts at (-1 = padding);
- `videos/num_token_frames`, `videos/grid_h`, `videos/grid_w` int32: each video's own F, h, w.

Videos differ in length and aspect ratio, so F, h and w are the largest over the manifest (probed
once before the store is created) and each video fills the corner `[:F_v, :h_v, :w_v]`; the rest is
zero padding. One video per chunk, so a reader fetches a video's tokens in one read.

Frames are resized whole (no crop) so that the short side is `short_side` (default: the backbone's
image size; DINO uses 480) and the long side is floored to a multiple of `size_multiple` (DINO's 64),
as DINO's `read_frame` does (facebookresearch/dino, eval_video_segmentation.py). An image backbone
gives one token frame per video frame; a video backbone with tubelets of t frames and clips of T
frames sees consecutive windows of T selected frames (the last one padded by repeating its last
frame) and gives one token frame per tubelet, whose `frame_index` is the tubelet's first frame.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from vidcache.cache import ArraySpec
from vidcache.config import to_dict
from vidcache.errors import ConfigError
from vidcache.extract.pool import WorkerPool
from vidcache.extract.runner import Block, Job
from vidcache.extract.sampling import frame_size, parse_frame_protocol
from vidcache.extract.transforms import frames_tensor
from vidcache.video.decode import open_video, probe_video

# A frame store's block (the unit of redone work and of memory while extracting) holds about this
# many bytes of tokens: one DAVIS video at 480p with ViT-S/8 is already ~300 MB.
FRAME_BLOCK_BYTES = 64 << 20


def default_multiple(patch_size: int) -> int:
    return 64 if 64 % patch_size == 0 else patch_size


class FrameWorker:
    """Runs in a decode worker: one video -> its selected frames, resized whole (and normalised on CPU)."""

    def __init__(self, protocol: str, short_side: int, multiple: int, mean, std, decoder: str,
                 transform_in_worker: bool):
        self.protocol, self.short_side, self.multiple = protocol, short_side, multiple
        self.mean, self.std, self.decoder = tuple(mean), tuple(std), decoder
        self.transform_in_worker = transform_in_worker

    def __call__(self, row: int, path: str) -> dict:
        with open_video(path, backend=self.decoder) as video:
            meta = {"num_frames": video.num_frames, "fps": video.fps, "height": video.height,
                    "width": video.width}
            idx = parse_frame_protocol(self.protocol).select(video.num_frames)
            frames = video.get_frames(idx.tolist())
        h, w = frame_size(meta["height"], meta["width"], self.short_side, self.multiple)
        out = {"meta": meta, "frame_index": idx, "size": (h, w), "num_clips": len(idx)}
        if self.transform_in_worker:
            out["x"] = frames_tensor(frames, h, w, self.mean, self.std)
        else:
            out["frames"] = torch.from_numpy(np.ascontiguousarray(frames))
        return out


def probe_sizes(manifest, protocol: str, short_side: int, multiple: int, *, decoder: str = "auto",
                workers: int = 2, timeout_s: float = 300.0) -> tuple[int, int, int]:
    """(most selected frames, largest frame height, width after resizing) over the manifest's videos.

    Probed in worker processes with a deadline each (a hanging file must not stall the run); a
    video that cannot be probed is left out here and fails in the extraction itself.
    """
    import functools

    p = parse_frame_protocol(protocol)
    fn = functools.partial(_probe_row, decoder=decoder)
    F_max = H_max = W_max = 1
    with WorkerPool(fn, workers=workers, timeout_s=timeout_s) as pool:
        for res in pool.imap((r, (path,)) for r, path in enumerate(manifest.paths)):
            if not res.ok:
                continue
            info = res.value
            h, w = frame_size(info["height"], info["width"], short_side, multiple)
            F_max = max(F_max, p.max_frames(info["num_frames"]))
            H_max, W_max = max(H_max, h), max(W_max, w)
    return F_max, H_max, W_max


def _probe_row(path: str, decoder: str = "auto") -> dict:
    return probe_video(path, decoder)


class FrameJob(Job):
    """Main-process side: windows of frames through the backbone, token grids into the block."""

    kind = "clips"

    def __init__(self, cfg, backbone, device: torch.device, sizes: tuple[int, int, int]):
        from vidcache.extract.clips import DTYPES

        self.cfg, self.backbone, self.device = cfg, backbone, device
        self.protocol = parse_frame_protocol(cfg.protocol)
        self.patch = int(backbone.patch_size)
        self.short_side = int(cfg.short_side or backbone.image_size)
        self.multiple = int(cfg.size_multiple or default_multiple(self.patch))
        problems = []
        if self.short_side % self.patch:
            problems.append(f"short_side {self.short_side} is not a multiple of the backbone's patch size {self.patch}")
        if self.multiple % self.patch:
            problems.append(f"size_multiple {self.multiple} is not a multiple of the backbone's patch size {self.patch}")
        if problems:
            raise ConfigError(problems, "extract config")
        self.window = int(cfg.clip_len or backbone.num_frames)
        t, _, _ = backbone.token_grid(self.window, self.short_side, self.short_side)
        if self.window % t:
            raise ConfigError([f"clip_len {self.window} is not a multiple of the backbone's tubelet"], "extract config")
        self.per_window = t  # token frames per window
        self.frames_per_token = self.window // t
        F_frames, H, W = sizes
        self.F = math.ceil(F_frames / self.frames_per_token)
        self.h, self.w = H // self.patch, W // self.patch
        self.D = int(backbone.embed_dim)
        self.compute_dtype = DTYPES[cfg.dtype]

    def store_config(self):
        from vidcache.config import hashed_dict
        from vidcache.extract.clips import ClipStoreConfig

        return ClipStoreConfig(extract=hashed_dict(self.cfg), backbone=self.backbone.describe(),
                               clip_len=self.window, stride=self.protocol.stride, image_size=self.short_side)

    def arrays(self) -> dict[str, ArraySpec]:
        return {"clips/frame_tokens": ArraySpec((self.F, self.h, self.w, self.D), "float16", videos_per_chunk=1),
                "clips/frame_index": ArraySpec((self.F,), "int32", fill_value=-1),
                "videos/num_token_frames": ArraySpec((), "int32"),
                "videos/grid_h": ArraySpec((), "int32"),
                "videos/grid_w": ArraySpec((), "int32")}

    def suggested_block(self) -> int:
        per_video = self.F * self.h * self.w * self.D * 2
        return int(max(1, min(64, 2 ** math.floor(math.log2(max(1.0, FRAME_BLOCK_BYTES / per_video))))))

    def store_attrs(self) -> dict:
        return {"run_config": to_dict(self.cfg), "protocol": str(self.protocol), "tokens": "frames",
                "embed_dim": self.D, "patch_size": self.patch, "frames_per_token": self.frames_per_token,
                "short_side": self.short_side, "size_multiple": self.multiple,
                "token_grid": [self.F, self.h, self.w], "num_clips": 0}

    def worker_fn(self) -> FrameWorker:
        return FrameWorker(str(self.protocol), self.short_side, self.multiple, self.backbone.mean,
                           self.backbone.std, self.cfg.decoder, transform_in_worker=self.device.type == "cpu")

    def begin_block(self, start: int, stop: int) -> None:
        n = stop - start
        self.start = start
        self.tok = np.zeros((n, self.F, self.h, self.w, self.D), np.float16)
        self.index = np.full((n, self.F), -1, np.int32)
        self.meta = {k: np.zeros(n, np.int32) for k in ("num_token_frames", "grid_h", "grid_w")}

    def add(self, row: int, payload: dict | None) -> None:
        if payload is None:
            return
        h, w = payload["size"]
        x = payload.get("x")
        if x is None:
            x = frames_tensor(payload["frames"], h, w, self.backbone.mean, self.backbone.std, device=self.device)
        tokens = self.encode(x)  # [n_token_frames, h/p, w/p, D]
        idx = np.asarray(payload["frame_index"], np.int64)
        n = tokens.shape[0]
        local = row - self.start
        gh, gw = tokens.shape[1], tokens.shape[2]
        self.tok[local, :n, :gh, :gw] = tokens
        self.index[local, :n] = idx[::self.frames_per_token][:n]
        self.meta["num_token_frames"][local] = n
        self.meta["grid_h"][local], self.meta["grid_w"][local] = gh, gw

    @torch.inference_mode()
    def encode(self, x: torch.Tensor) -> np.ndarray:
        """[3, N, H, W] normalised frames -> float16 [ceil(N / frames_per_token), H/p, W/p, D]."""
        import contextlib

        C, N, H, W = x.shape
        T = self.window
        windows = math.ceil(N / T)
        if windows * T > N:  # pad the last window by repeating the last frame
            x = torch.cat([x, x[:, -1:].expand(C, windows * T - N, H, W)], dim=1)
        x = x.reshape(C, windows, T, H, W).transpose(0, 1)  # [windows, 3, T, H, W]
        use_autocast = self.compute_dtype != torch.float32
        ctx = (torch.autocast(self.device.type, dtype=self.compute_dtype) if use_autocast
               else contextlib.nullcontext())
        t, gh, gw = self.backbone.token_grid(T, H, W)
        out = []
        bs = max(1, self.cfg.batch_size // T)
        for s in range(0, windows, bs):
            with ctx:
                tok = self.backbone.forward_features(x[s:s + bs].to(self.device, non_blocking=True))
            out.append(tok.float().reshape(-1, t, gh, gw, tok.shape[-1]).reshape(-1, gh, gw, tok.shape[-1]).cpu())
        tokens = torch.cat(out)[:math.ceil(N / self.frames_per_token)]
        return tokens.numpy().astype(np.float16)

    def end_block(self) -> Block:
        return Block({"clips/frame_tokens": self.tok, "clips/frame_index": self.index}, self.meta)
