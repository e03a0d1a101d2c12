"""Dense evaluations' configs, torch-free (the CLI builds `vidcache probe propagate`, `probe retrieval`
and `probe linseg` options from them)."""

from __future__ import annotations

from dataclasses import dataclass

from vidcache.config import field
from vidcache.probe.config import TrainConfig

PRESETS = {
    "dino": {"n_last_frames": 7, "radius": 12, "topk": 5, "temperature": 0.1},
    "rvm": {"n_last_frames": 20, "radius": 20, "topk": 7, "temperature": 0.7},
}


@dataclass
class PropagateConfig:
    """Label propagation settings; unset fields take the preset's value."""

    preset: str = field("dino", help="dino (7 frames, radius 12, top-5, T 0.1) or rvm (20, 20, 7, 0.7)")
    n_last_frames: int | None = field(None, help="predicted frames kept as context besides the first")
    radius: int | None = field(None, help="context tokens within this many grid cells (0 = no limit)")
    topk: int | None = field(None, help="context tokens each target token takes its labels from")
    temperature: float | None = field(None, help="softmax temperature of the cosine affinities")
    split: str = field("val", help="split to evaluate")
    bound_th: float = field(0.008, help="F tolerance: fraction of the image diagonal (>= 1: pixels)")
    device: str = field("auto", help="auto, cpu, cuda or cuda:N", hashed=False)

    def validate(self) -> list[str]:
        p = []
        if self.preset not in PRESETS:
            p.append(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        for name, lo in (("n_last_frames", 0), ("radius", 0), ("topk", 1)):
            v = getattr(self, name)
            if v is not None and v < lo:
                p.append(f"{name} must be >= {lo}, got {v}")
        if self.temperature is not None and not self.temperature > 0:
            p.append(f"temperature must be > 0, got {self.temperature}")
        if not self.bound_th > 0:
            p.append(f"bound_th must be > 0, got {self.bound_th}")
        return p

    def resolved(self) -> dict:
        base = dict(PRESETS.get(self.preset, PRESETS["dino"]))
        for k in base:
            if getattr(self, k) is not None:
                base[k] = getattr(self, k)
        return base


@dataclass
class RetrievalConfig:
    """Hummingbird retrieval settings."""

    k: int = field(30, help="nearest bank patches per evaluation patch")
    temperature: float = field(0.02, help="softmax temperature of the cosine weights")
    bank_size: int | None = field(None, help="largest memory bank (patches); None keeps every train patch")
    frames_per_video: int | None = field(8, help="frames used per video (evenly spaced; None = all)")
    labels: str = field("masks", help="masks (mask ids are classes) or class (object pixels: 1 + video label)")
    train_split: str = field("train", help="split whose frames fill the memory bank")
    split: str = field("val", help="split to evaluate")
    seed: int = field(0, help="seed of the bank's tie-breaking noise")
    write_masks: bool = field(True, help="write the predicted masks as indexed PNGs (OUT/Annotations)",
                              hashed=False)
    device: str = field("auto", help="auto, cpu or cuda (faiss on GPU when it sees one)", hashed=False)

    def validate(self) -> list[str]:
        p = []
        if self.k < 1:
            p.append(f"k must be >= 1, got {self.k}")
        if not self.temperature > 0:
            p.append(f"temperature must be > 0, got {self.temperature}")
        if self.bank_size is not None and self.bank_size < 1:
            p.append(f"bank_size must be >= 1, got {self.bank_size}")
        if self.frames_per_video is not None and self.frames_per_video < 1:
            p.append(f"frames_per_video must be >= 1, got {self.frames_per_video}")
        if self.labels not in ("masks", "class"):
            p.append(f"labels must be masks or class, got {self.labels!r}")
        if self.train_split == self.split:
            p.append(f"the memory bank (train_split) and the evaluation split are both {self.split!r}")
        return p


@dataclass
class LinsegConfig(TrainConfig):
    """Linear segmentation: the shared grid recipe plus which frames and classes to use."""

    frames_per_video: int | None = field(8, help="frames used per video (evenly spaced; None = all)")
    labels: str = field("masks", help="masks (mask ids are classes) or class (object pixels: 1 + video label)")
    write_masks: bool = field(True, help="write the selected head's masks of the reported split", hashed=False)

    def validate(self) -> list[str]:
        p = super().validate()
        if self.frames_per_video is not None and self.frames_per_video < 1:
            p.append(f"frames_per_video must be >= 1, got {self.frames_per_video}")
        if self.labels not in ("masks", "class"):
            p.append(f"labels must be masks or class, got {self.labels!r}")
        if self.sample != "clip":
            p.append("linseg trains on single patch tokens: sample must be clip")
        return p
