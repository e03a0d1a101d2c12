"""`vidcache extract codes`: videos -> k-means patch codes in a code store (ViDROP-style).

The same block runner as `extract clips` (ownership, resume, failed videos, torchrun): decode
workers select frames (`--fps`, `--max-frames`), resize the short side and centre-crop them to the
codebook's size; the main process assigns every patch to its nearest centroid (faiss, on GPUs when
there are some) and writes `codes/frames [V, T_max, size/p, size/p]` (uint16, or uint8 when K <= 256)
plus `videos/num_code_frames`. Frames past a video's count are padding (zeros).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from vidcache.cache import ArraySpec
from vidcache.config import check, to_dict
from vidcache.device import resolve_device
from vidcache.distributed import DistInfo, destroy_distributed, init_distributed
from vidcache.extract.config import CodeExtractConfig  # noqa: F401  (re-exported)
from vidcache.extract.runner import Block, Job, Summary, run_extraction
from vidcache.video.decode import open_video


@dataclass
class CodeStoreConfig:
    """What a code store's config_hash covers: the codebook's content and the frame selection."""

    codebook_digest: str
    codec: dict
    fps: float | None
    max_frames: int


class CodeWorker:
    """Runs in a decode worker: one video -> its selected frames, resized and cropped (uint8)."""

    def __init__(self, size: int, fps: float | None, max_frames: int, decoder: str):
        self.size, self.fps, self.max_frames, self.decoder = size, fps, max_frames, decoder

    def __call__(self, row: int, path: str) -> dict:
        from vidcache.codec import preprocess_frames, select_frames

        with open_video(path, backend=self.decoder) as video:
            meta = {"num_frames": video.num_frames, "fps": video.fps, "height": video.height,
                    "width": video.width}
            idx = select_frames(video.num_frames, video.fps, self.fps, self.max_frames)
            frames = preprocess_frames(video.get_frames(idx.tolist()), self.size)
        return {"meta": meta, "frames": torch.from_numpy(np.ascontiguousarray(frames)), "num_clips": 0}


class CodeJob(Job):
    kind = "codes"

    def __init__(self, cfg: CodeExtractConfig, codebook):
        self.cfg, self.codebook = cfg, codebook
        self.grid = codebook.grid
        self.T = int(cfg.max_frames)

    def store_config(self) -> CodeStoreConfig:
        digest = hashlib.sha256(np.ascontiguousarray(self.codebook.centroids).tobytes()).hexdigest()
        return CodeStoreConfig(codebook_digest=digest, codec=self.codebook.full_config(), fps=self.cfg.fps,
                               max_frames=self.T)

    def arrays(self) -> dict[str, ArraySpec]:
        # Codes compress well (neighbouring patches repeat), unlike embeddings: zstd on.
        return {"codes/frames": ArraySpec((self.T, self.grid, self.grid), self.codebook.dtype.name, compress=True),
                "videos/num_code_frames": ArraySpec((), "int32")}

    def store_attrs(self) -> dict:
        return {"run_config": to_dict(self.cfg), "codebook_file": self.cfg.codebook}

    def static_arrays(self) -> dict:
        """The codebook, written with the store before the attributes that finish its creation."""
        return {"codes/codebook": (self.codebook.centroids_255(),
                                   self.codebook.store_attrs(fps=self.cfg.fps, max_frames=self.T))}

    def worker_fn(self) -> CodeWorker:
        return CodeWorker(self.codebook.size, self.cfg.fps, self.T, self.cfg.decoder)

    def begin_block(self, start: int, stop: int) -> None:
        self.start = start
        self.codes = np.zeros((stop - start, self.T, self.grid, self.grid), self.codebook.dtype)
        self.count = np.zeros(stop - start, np.int32)

    def add(self, row: int, payload: dict | None) -> None:
        if payload is None:
            return
        frames = payload["frames"].numpy()
        codes = self.codebook.encode_frames(frames, preprocess=False)
        self.codes[row - self.start, : len(codes)] = codes
        self.count[row - self.start] = len(codes)

    def end_block(self) -> Block:
        return Block({"codes/frames": self.codes}, {"num_code_frames": self.count})


def extract_codes(manifest, out: str, cfg: CodeExtractConfig, *, overwrite: bool = False, progress=None,
                  storage_options: dict | None = None, start_method: str | None = None) -> Summary:
    """Encode every video of `manifest` into the code store at `out` (resumable, torchrun-aware)."""
    from vidcache.codec import load_codebook

    check(cfg, "extract codes config")
    dist = DistInfo.from_env()
    device = resolve_device(cfg.device, dist.local_rank)
    codebook = load_codebook(cfg.codebook, device=device.type)
    created = init_distributed(dist, device)
    try:
        job = CodeJob(cfg, codebook)
        return run_extraction(job, manifest, out, workers=cfg.workers, timeout_s=cfg.decode_timeout,
                              overwrite=overwrite, videos_per_block=cfg.videos_per_block, progress=progress,
                              dist=dist, storage_options=storage_options, start_method=start_method)
    finally:
        destroy_distributed(created)
