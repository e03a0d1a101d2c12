"""The synthetic corpus' config and class list, free of numpy and torch (the CLI builds
`vidcache data synth` options from them; `vidcache.data.synth.synthesize` writes the corpus)."""

from __future__ import annotations

from dataclasses import dataclass

from vidcache.config import field

CLASS_PAIRS: tuple[tuple[str, str], ...] = (
    ("motion_left", "motion_right"),
    ("appearance_disc", "appearance_square"),
    ("motion_up", "motion_down"),
    ("motion_cw", "motion_ccw"),
    ("appearance_stripes", "appearance_checker"),
    ("motion_grow", "motion_shrink"),
    ("motion_fast", "motion_slow"),
    ("appearance_triangle", "appearance_cross"),
)
CLASS_NAMES: tuple[str, ...] = tuple(c for pair in CLASS_PAIRS for c in pair)


@dataclass
class SynthConfig:
    videos: int = field(240, help="number of videos, spread evenly over the classes")
    classes: int = field(8, help=f"number of classes, the first K of a fixed list of pairs (2..{len(CLASS_NAMES)})")
    seed: int = field(0, help="random seed; the same seed gives byte-identical files")
    size: int = field(64, help="frame height and width in pixels (even, >= 16)")
    frames: int = field(32, help="frames per video")
    fps: int = field(16, help="frame rate written in the files")
    val_fraction: float = field(0.15, help="fraction of each class in the val split")
    test_fraction: float = field(0.15, help="fraction of each class in the test split")
    crf: int = field(23, help="x264 constant rate factor (0 = lossless, 51 = worst)")
    noise: float = field(3.0, help="std of the per-frame camera noise, in 0..255 grey levels")
    ground_truth: bool = field(True, help="write per-frame instance masks (annotations/, DAVIS layout) "
                                          "and forward optical flow (flow/) beside the videos")
    shared_look: bool = field(False, help="give every video the same background and object colours "
                                          "(drawn from the seed), so that videos of a class differ "
                                          "only in where and how fast the object moves")

    def validate(self) -> list[str]:
        p = []
        if not 2 <= self.classes <= len(CLASS_NAMES):
            p.append(f"classes must be in 2..{len(CLASS_NAMES)}, got {self.classes}")
        if self.videos < max(self.classes, 1):
            p.append(f"videos ({self.videos}) must be at least the number of classes ({self.classes})")
        if self.size < 16 or self.size % 2:
            p.append(f"size must be even and >= 16 (yuv420p halves the chroma), got {self.size}")
        if self.frames < 2:
            p.append(f"frames must be >= 2 (motion needs two frames), got {self.frames}")
        if not 1 <= self.fps <= 240:
            p.append(f"fps must be in 1..240, got {self.fps}")
        if not 0 <= self.val_fraction < 1 or not 0 <= self.test_fraction < 1 \
                or self.val_fraction + self.test_fraction >= 1:
            p.append(f"val_fraction and test_fraction must be in [0, 1) with a sum < 1, "
                     f"got {self.val_fraction} and {self.test_fraction}")
        if not 0 <= self.crf <= 51:
            p.append(f"crf must be in 0..51, got {self.crf}")
        if not 0 <= self.noise <= 50:
            p.append(f"noise must be in 0..50, got {self.noise}")
        return p
