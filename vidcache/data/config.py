"""The data room's torch- and numpy-free descriptions, read by the CLI when it builds its options:

- the synthetic corpus' config and class list (`vidcache data synth`; `vidcache.data.synth.synthesize`
  writes the corpus);
- `IMPORTERS`, the registry of manifest importers (`vidcache data manifest --format NAME`;
  `vidcache.data.importers.import_manifest` runs one). Adding an importer is one entry here.
"""

from __future__ import annotations

import dataclasses
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


@dataclass(frozen=True)
class Importer:
    """A manifest importer as `vidcache data manifest --format NAME` runs it.

    `function` ("module:name") is imported only when the importer runs, so listing the formats needs
    neither numpy nor the importers. `options` maps the function's keyword arguments to the
    `data manifest` options that fill them (`--val-fraction` fills UCF101's `val_groups`); `needs`
    names the options that must be given; `splits` says how `--splits` is read: "one" folder or
    "many" files (repeat the option).
    """

    function: str
    about: str  # one phrase for `--format`'s help
    options: dict = dataclasses.field(default_factory=dict)
    needs: tuple = ()
    splits: str = ""

    def load(self):
        """The importer function itself: `function(root, **kwargs) -> Manifest`."""
        import importlib

        module, name = self.function.split(":")
        return getattr(importlib.import_module(module), name)


_SPLITS = {"val_fraction": "val_fraction", "seed": "seed"}
IMPORTERS: dict[str, Importer] = {
    "folders": Importer("vidcache.data.importers:manifest_from_folders",
                        "a folder per class, or train/val/test folders of class folders",
                        {**_SPLITS, "test_fraction": "test_fraction"}),
    "ucf101": Importer("vidcache.data.importers:manifest_from_ucf101", "UCF101 with its official split folder",
                       {"split_dir": "splits", "fold": "fold", "val_groups": "val_fraction", "seed": "seed"},
                       needs=("splits",), splits="one"),
    "hmdb51": Importer("vidcache.data.importers:manifest_from_hmdb51", "HMDB51 with its official split folder",
                       {"split_dir": "splits", "fold": "fold", **_SPLITS}, needs=("splits",), splits="one"),
    "kinetics": Importer("vidcache.data.importers:manifest_from_kinetics", "Kinetics with its annotation CSVs",
                         {"csv_path": "splits", "split_name": "split_name"}, needs=("splits",), splits="many"),
    "ssv2": Importer("vidcache.data.importers:manifest_from_ssv2", "Something-Something v2 with its JSON files",
                     {"labels_json": "labels_json", "train_json": "train_json", "val_json": "val_json",
                      "test_json": "test_json", "official_val_as": "official_val_as", **_SPLITS},
                     needs=("labels_json", "train_json", "val_json")),
    "davis": Importer("vidcache.data.davis:manifest_from_davis", "a DAVIS-2017 tree: frame folders + masks"),
}


def readers(option: str) -> list[str]:
    """The formats whose importer reads `data manifest` option `option`."""
    return [name for name, imp in IMPORTERS.items() if option in imp.options.values()]


def unknown_format(name: str) -> str:
    return f"unknown manifest format {name!r}; known: {', '.join(IMPORTERS)}"
