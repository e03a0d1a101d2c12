"""The codec's config, torch-free (the CLI builds `vidcache codec train` options from it)."""

from __future__ import annotations

from dataclasses import dataclass

from vidcache.config import field

MAX_K = 65536  # codes are stored as uint16
PIXEL_SPACES = ("rgb255", "rgb01")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class CodecConfig:
    """How a codebook is trained (the `vidcache codec train` options)."""

    k: int = field(65536, help="number of centroids (codes); at most 65,536 so a code fits in uint16")
    patch: int = field(10, help="patch side in pixels (ViDROP: 10 -> 150x, 16 -> 384x)")
    size: int = field(160, help="frames are resized (short side) and centre-cropped to size x size; "
                                "must be divisible by the patch")
    pixel_space: str = field("rgb255", help="space k-means runs in: 'rgb255' (0..255) or 'rgb01' (0..1); "
                                            "same clusters, only the stored scale differs")
    niter: int = field(20, help="Lloyd iterations")
    seed: int = field(0, help="seed for frame, patch and initial-centroid sampling")
    frames_per_video: int = field(8, help="frames sampled (evenly spaced) from each training video")
    max_patches: int = field(0, help="training patches kept (random subset); 0 = 64 per centroid")
    split: str = field("train", help="manifest split the codebook is trained on")
    device: str = field("auto", help="'auto', 'cpu' or 'cuda' (all GPUs with faiss-gpu)", hashed=False)

    def validate(self) -> list[str]:
        p = []
        if not 2 <= self.k <= MAX_K:
            p.append(f"k must be in [2, {MAX_K}] (codes are stored as uint16), got {self.k}")
        if self.patch < 1:
            p.append(f"patch must be >= 1, got {self.patch}")
        if self.size < 1:
            p.append(f"size must be >= 1, got {self.size}")
        elif self.patch >= 1 and self.size % self.patch:
            lo = max(self.patch, self.size // self.patch * self.patch)
            p.append(f"size {self.size} is not divisible by patch {self.patch} (try {lo} or {lo + self.patch})")
        if self.pixel_space not in PIXEL_SPACES:
            p.append(f"pixel_space must be one of {', '.join(PIXEL_SPACES)}, got {self.pixel_space!r}")
        if self.niter < 1:
            p.append(f"niter must be >= 1, got {self.niter}")
        if self.frames_per_video < 1:
            p.append(f"frames_per_video must be >= 1, got {self.frames_per_video}")
        if self.max_patches < 0:
            p.append(f"max_patches must be >= 0 (0 = 64 per centroid), got {self.max_patches}")
        elif 0 < self.max_patches < self.k:
            p.append(f"max_patches ({self.max_patches}) must be at least k ({self.k})")
        if self.device not in DEVICES:
            p.append(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        return p

    def patches_wanted(self) -> int:
        return self.max_patches or 64 * self.k
