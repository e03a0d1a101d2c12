"""Manifests: the list of videos of a dataset, as a CSV with `path,label,split` (and `masks`).

`label` holds class names or integer ids; `path` is absolute or relative to the manifest's folder.
An optional fourth column `masks` names each video's folder of per-frame masks (indexed PNGs,
DAVIS layout; see `vidcache.data.davis`), relative like `path`; empty for a video without masks.
The class list is the sorted set of names, unless a class file sits beside the manifest (one name
per line, in id order), which importers write so that ids match the dataset's official ones. Each
manifest has its own: `train.csv` reads `train.classes.txt`, so two manifests in one folder never
share (or overwrite) a class list; a plain `classes.txt` is read when there is no own file (the
synthetic corpus and older layouts).
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vidcache.errors import DataError

SPLITS = ("train", "val", "test")


@dataclass
class Manifest:
    """Videos in a fixed order (the store's row order), their labels (-1 = none) and splits."""

    paths: list[str]
    labels: np.ndarray  # int32 [V], -1 when unlabelled
    splits: list[str]
    classes: list[str] = field(default_factory=list)
    source: str = ""  # where it was read from, for messages
    masks: list[str] | None = None  # per-video mask folder ("" = none), or None when no video has one

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.int32)
        if not (len(self.paths) == len(self.labels) == len(self.splits)):
            raise DataError("manifest columns differ in length: paths, labels and splits must match")
        if self.masks is not None:
            self.masks = [str(m or "") for m in self.masks]
            if len(self.masks) != len(self.paths):
                raise DataError("manifest columns differ in length: masks must have one entry per video")
            if not any(self.masks):
                self.masks = None

    def __len__(self) -> int:
        return len(self.paths)

    def split_indices(self, split: str) -> np.ndarray:
        """Row indices of one split; an unknown split names the ones that exist."""
        idx = np.array([i for i, s in enumerate(self.splits) if s == split], dtype=np.int64)
        if len(idx) == 0:
            have = ", ".join(f"{k} ({n})" for k, n in sorted(Counter(self.splits).items()))
            raise DataError(f"split {split!r} is empty or unknown in {self.source or 'the manifest'}; "
                            f"splits present: {have or 'none'}")
        return idx

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.splits).items()))

    def write(self, path: str | Path, relative: bool = True, classes_file: str | None = None) -> Path:
        """Write `path,label,split` (label as class name when classes are known) and the class file.

        The class file is the manifest's own (`classes_path(path)`, e.g. `train.classes.txt`) unless
        `classes_file` names another in the same folder; a `classes.txt` other manifests read is
        never touched.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        root = path.parent.resolve()
        tmp = path.with_name(path.name + ".tmp")
        def rel(p: str) -> str:
            # Relative to the manifest's folder, as read_manifest reads it (a path relative to the
            # current folder would point elsewhere once read back).
            if relative and p and not _is_url(p):
                try:
                    return os.path.relpath(Path(p).resolve(), root)
                except ValueError:  # another drive: no relative path exists
                    return str(Path(p).resolve())
            return p

        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "split"] + (["masks"] if self.masks else []))
            for i, (p, y, s) in enumerate(zip(self.paths, self.labels.tolist(), self.splits)):
                label = self.classes[y] if (self.classes and y >= 0) else ("" if y < 0 else str(y))
                w.writerow([rel(p), label, s] + ([rel(self.masks[i])] if self.masks else []))
        own = path.parent / classes_file if classes_file else classes_path(path)
        if self.classes:
            tmp_classes = own.with_name(own.name + ".tmp")
            tmp_classes.write_text("\n".join(self.classes) + "\n")
            tmp_classes.replace(own)
        else:
            own.unlink(missing_ok=True)  # a class file left from an earlier, labelled version
        tmp.replace(path)
        return path


def classes_path(manifest: str | Path) -> Path:
    """The manifest's own class file: `DIR/NAME.csv` -> `DIR/NAME.classes.txt`."""
    manifest = Path(manifest)
    return manifest.with_name(manifest.stem + ".classes.txt")


def _is_url(p: str) -> bool:
    return "://" in p


def read_manifest(path: str | Path) -> Manifest:
    """Read a manifest CSV; every malformed row is reported at once with its line number."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest not found: {path} (make one with `vidcache data manifest ROOT` "
                        f"or `vidcache data synth OUT`)")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or [c.strip() for c in rows[0][:3]] != ["path", "label", "split"]:
        raise DataError(f"{path}: first line must be the header 'path,label,split'")
    root = path.parent.resolve()
    has_masks = len(rows[0]) > 3 and rows[0][3].strip() == "masks"
    paths, raw_labels, splits, masks, problems = [], [], [], [], []
    for lineno, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) < 3:
            problems.append(f"line {lineno}: expected 3 columns, got {len(row)}")
            continue
        p, y, s = (c.strip() for c in row[:3])
        if not p:
            problems.append(f"line {lineno}: empty path")
        if not s:
            problems.append(f"line {lineno}: empty split")
        paths.append(p if (_is_url(p) or Path(p).is_absolute()) else str(root / p))
        raw_labels.append(y)
        splits.append(s)
        if has_masks:
            m = row[3].strip() if len(row) > 3 else ""
            masks.append(m if (not m or _is_url(m) or Path(m).is_absolute()) else str(root / m))
    if problems:
        raise DataError(f"{path}: " + "; ".join(problems[:10]) + (" ..." if len(problems) > 10 else ""))
    if not paths:
        raise DataError(f"{path}: the manifest lists no videos")

    classes_file = classes_path(path)
    if not classes_file.is_file():
        classes_file = path.parent / "classes.txt"
    classes = [c.strip() for c in classes_file.read_text().splitlines() if c.strip()] if classes_file.is_file() else []
    named = [y for y in raw_labels if y and not _is_int(y)]
    if not classes and named:
        classes = sorted(set(named))
    index = {c: i for i, c in enumerate(classes)}
    labels = []
    for lineno, y in enumerate(raw_labels, start=2):
        if y == "":
            labels.append(-1)
        elif y in index:
            labels.append(index[y])
        elif _is_int(y):
            labels.append(int(y))
        else:
            problems.append(f"line {lineno}: label {y!r} is not in {classes_file.name}")
    if problems:
        raise DataError(f"{path}: " + "; ".join(problems[:10]))
    if not classes and any(y >= 0 for y in labels):
        classes = [str(i) for i in range(max(labels) + 1)]
    return Manifest(paths, np.array(labels, dtype=np.int32), splits, classes, source=str(path),
                    masks=masks if has_masks else None)


def _is_int(s: str) -> bool:
    try:
        int(s)
        return True
    except ValueError:
        return False
