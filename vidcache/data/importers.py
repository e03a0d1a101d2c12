"""Importers: build a `Manifest` from a dataset's own layout and official split files.

Every importer keeps the dataset's official class ids (the order of `Manifest.classes`), so that
label 0 of a store is label 0 of the papers. Videos listed by the split files but absent on disk
stay in the manifest (the extractor marks them failed, so the store keeps the official row count)
and are counted in one `MissingVideosWarning`.

Split conventions, chosen to match what papers report:
- folders: `train/ val/ test/` subfolders when present, else a stratified random split.
- UCF101 / HMDB51: the official train/test lists of a fold; `val` is carved from train on request
  (UCF101 by whole groups, so clips cut from one long video never straddle train and val).
- Kinetics: the CSV's split column (`validate` -> `val`); `split_name` overrides it.
- SSv2: papers report the official validation set as their test number, so by default it becomes
  `test` and `val` is carved from train; `official_val_as="val"` keeps the official names instead.
"""

from __future__ import annotations

import csv
import json
import re
import warnings
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from vidcache.data.config import IMPORTERS, unknown_format  # noqa: F401  (IMPORTERS re-exported)
from vidcache.data.manifest import SPLITS, Manifest
from vidcache.errors import DataError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov")


class MissingVideosWarning(UserWarning):
    """Some videos named by the split files are not on disk; they stay in the manifest."""


# ----------------------------------------------------------------------------------------------
# helpers


def _stable_seed(seed: int, key: str) -> np.random.Generator:
    # Seeding per class name (not per class index) keeps a class's split unchanged when another
    # class is added to or removed from the tree.
    return np.random.default_rng([int(seed), zlib.crc32(key.encode())])


def _split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(n_val, n_test) for a class of n videos: rounded, at least one each when the class is big
    enough to keep one video for training, so small classes still appear in every split."""
    n_val = int(round(n * val_fraction))
    n_test = int(round(n * test_fraction))
    if val_fraction > 0 and n_val == 0 and n >= 3:
        n_val = 1
    if test_fraction > 0 and n_test == 0 and n >= 3:
        n_test = 1
    while n_val + n_test >= n and (n_val + n_test) > 0:  # keep >= 1 training video
        if n_val >= n_test and n_val > 0:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test


def stratified_split(labels: Sequence[int], val_fraction: float, test_fraction: float,
                     seed: int = 0, keys: Sequence[str] | None = None) -> list[str]:
    """A train/val/test split per row, stratified per label and deterministic for a seed.

    `keys` (e.g. class names) seed each class's shuffle; by default the label itself does.
    """
    _check_fractions(val_fraction, test_fraction)
    labels = np.asarray(labels)
    out = ["train"] * len(labels)
    for y in np.unique(labels):
        rows = np.flatnonzero(labels == y)
        key = keys[int(y)] if keys is not None else str(int(y))
        rows = rows[_stable_seed(seed, key).permutation(len(rows))]
        n_val, n_test = _split_counts(len(rows), val_fraction, test_fraction)
        for r in rows[:n_test]:
            out[r] = "test"
        for r in rows[n_test:n_test + n_val]:
            out[r] = "val"
    return out


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    problems = []
    if not 0.0 <= val_fraction < 1.0:
        problems.append(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not 0.0 <= test_fraction < 1.0:
        problems.append(f"test_fraction must be in [0, 1), got {test_fraction}")
    if not problems and val_fraction + test_fraction >= 1.0:
        problems.append(f"val_fraction + test_fraction must be < 1, got {val_fraction + test_fraction}")
    if problems:
        raise DataError("; ".join(problems))


def _carve_val(labels: np.ndarray, splits: list[str], classes: list[str], fraction: float,
               seed: int) -> list[str]:
    """Move a stratified random `fraction` of the train rows to val."""
    if fraction <= 0:
        return splits
    train = [i for i, s in enumerate(splits) if s == "train"]
    sub = stratified_split(labels[train], fraction, 0.0, seed, keys=classes)
    out = list(splits)
    for i, s in zip(train, sub):
        out[i] = s
    return out


def _warn_missing(paths: Sequence[str], what: str) -> int:
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        warnings.warn(f"{what}: {len(missing)} of {len(paths)} videos are missing on disk (first: "
                      f"{missing[0]}); they stay in the manifest and extraction will mark them failed",
                      MissingVideosWarning, stacklevel=3)
    return len(missing)


def _need_dir(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{what} not found: {path} (pass the folder that holds it)")
    return path


def _need_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    return path


def _lines(path: Path) -> list[tuple[int, str]]:
    return [(i, ln.strip()) for i, ln in enumerate(path.read_text().splitlines(), start=1) if ln.strip()]


# ----------------------------------------------------------------------------------------------
# folder tree


_SPLIT_DIRS = {"train": "train", "val": "val", "validation": "val", "valid": "val", "test": "test"}


def _videos_in(folder: Path, extensions: Sequence[str]) -> list[Path]:
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in exts
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def manifest_from_folders(root: str | Path, val_fraction: float = 0.1, test_fraction: float = 0.1,
                          seed: int = 0, extensions: Sequence[str] = VIDEO_EXTENSIONS) -> Manifest:
    """A folder-per-class tree `root/<class>/<video>` (videos may sit in subfolders of a class).

    When `root` holds split folders (`train/`, `val/` or `validation/`, `test/`), each holding
    class folders, those splits are used as they are and the fractions are ignored. Otherwise the
    split is random, stratified per class and deterministic for `seed`. Classes are sorted by name;
    rows are ordered by split folder, class, then path.
    """
    root = _need_dir(root, "video folder")
    split_dirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir() and p.name.lower() in _SPLIT_DIRS}
    paths: list[str] = []
    names: list[str] = []
    splits: list[str] = []
    if "train" in split_dirs:
        order = sorted(split_dirs, key=lambda k: SPLITS.index(_SPLIT_DIRS[k]))
        for key in order:
            for cdir in _class_dirs(split_dirs[key]):
                for v in _videos_in(cdir, extensions):
                    paths.append(str(v))
                    names.append(cdir.name)
                    splits.append(_SPLIT_DIRS[key])
        classes = sorted(set(names))
        labels = np.array([classes.index(n) for n in names], dtype=np.int32)
    else:
        _check_fractions(val_fraction, test_fraction)
        for cdir in _class_dirs(root):
            for v in _videos_in(cdir, extensions):
                paths.append(str(v))
                names.append(cdir.name)
        classes = sorted(set(names))
        labels = np.array([classes.index(n) for n in names], dtype=np.int32)
        splits = stratified_split(labels, val_fraction, test_fraction, seed, keys=classes)
    if not paths:
        raise DataError(f"no videos ({', '.join(extensions)}) found under {root}/<class>/: expected one "
                        f"folder per class, optionally inside train/ val/ test/")
    return Manifest(paths, labels, splits, classes, source=str(root))


# ----------------------------------------------------------------------------------------------
# UCF101


_UCF_GROUP = re.compile(r"_g(\d+)_c\d+", re.IGNORECASE)


def _check_fold(fold: int, n: int) -> None:
    if fold not in range(1, n + 1):
        raise DataError(f"fold must be one of 1..{n}, got {fold}")


def manifest_from_ucf101(root: str | Path, split_dir: str | Path, fold: int = 1, val_groups: float = 0.0,
                         seed: int = 0) -> Manifest:
    """UCF101 from `classInd.txt`, `trainlist0{fold}.txt` and `testlist0{fold}.txt` in `split_dir`.

    Videos are `root/<Class>/v_<Class>_gXX_cYY.avi` as the lists name them. `val_groups` moves
    that fraction of the training *group numbers* (chosen at random for `seed`, at least one when
    > 0) to val: every class has every group, so val stays stratified, and the clips of one group
    (cut from one long video) never straddle train and val.
    """
    _check_fold(fold, 3)
    if not 0.0 <= val_groups < 1.0:
        raise DataError(f"val_groups must be in [0, 1), got {val_groups}")
    root, split_dir = Path(root), _need_dir(split_dir, "UCF101 split folder (ucfTrainTestlist)")
    class_file = _need_file(split_dir / "classInd.txt", "UCF101 classInd.txt")
    classes, problems = [], []
    for lineno, line in _lines(class_file):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            problems.append(f"line {lineno}: expected '<id> <ClassName>', got {line!r}")
        elif int(parts[0]) != len(classes) + 1:
            problems.append(f"line {lineno}: class id {parts[0]} out of order (expected {len(classes) + 1})")
        else:
            classes.append(parts[1])
    if problems:
        raise DataError(f"{class_file}: " + "; ".join(problems[:10]))
    # The lists spell a few classes differently from classInd (HandstandPushups vs HandStandPushups
    # in file names), so folder names are matched without case.
    by_lower = {c.lower(): i for i, c in enumerate(classes)}

    paths, labels, splits = [], [], []
    for split, name in (("train", f"trainlist0{fold}.txt"), ("test", f"testlist0{fold}.txt")):
        list_file = _need_file(split_dir / name, f"UCF101 {name}")
        for lineno, line in _lines(list_file):
            parts = line.split()
            rel = parts[0].replace("\\", "/")
            folder = rel.split("/")[0] if "/" in rel else ""
            if len(parts) >= 2:
                if not parts[1].isdigit() or not 1 <= int(parts[1]) <= len(classes):
                    problems.append(f"{name} line {lineno}: label {parts[1]!r} is not a class id 1..{len(classes)}")
                    continue
                y = int(parts[1]) - 1
            elif folder.lower() in by_lower:
                y = by_lower[folder.lower()]
            else:
                problems.append(f"{name} line {lineno}: folder {folder!r} is not a class of classInd.txt")
                continue
            paths.append(str(root / rel))
            labels.append(y)
            splits.append(split)
    if problems:
        raise DataError(f"{split_dir}: " + "; ".join(problems[:10]))

    if val_groups > 0:
        groups = []
        for p in paths:
            m = _UCF_GROUP.search(Path(p).name)
            groups.append(int(m.group(1)) if m else -1)
        train_groups = sorted({g for g, s in zip(groups, splits) if s == "train" and g >= 0})
        if not train_groups:
            raise DataError("val_groups needs UCF101 file names with a '_gXX_' group; none found in the train list")
        n = max(1, int(round(val_groups * len(train_groups))))
        n = min(n, len(train_groups) - 1) if len(train_groups) > 1 else 0
        chosen = set(np.random.default_rng(seed).choice(train_groups, size=n, replace=False).tolist())
        splits = ["val" if (s == "train" and g in chosen) else s for g, s in zip(groups, splits)]

    _warn_missing(paths, f"UCF101 fold {fold}")
    return Manifest(paths, np.array(labels, dtype=np.int32), splits, classes, source=str(split_dir))


# ----------------------------------------------------------------------------------------------
# HMDB51


def manifest_from_hmdb51(root: str | Path, split_dir: str | Path, fold: int = 1, val_fraction: float = 0.0,
                         seed: int = 0) -> Manifest:
    """HMDB51 from the `<class>_test_split{fold}.txt` files in `split_dir` (lines `video.avi 1`,
    1 = train, 2 = test, 0 = not in this fold and left out). Classes are sorted by name; videos
    are `root/<class>/<video>`. `val_fraction` carves a stratified random val split from train.
    """
    _check_fold(fold, 3)
    _check_fractions(val_fraction, 0.0)
    root, split_dir = Path(root), _need_dir(split_dir, "HMDB51 split folder (testTrainMulti_7030_splits)")
    suffix = f"_test_split{fold}.txt"
    files = sorted(p for p in split_dir.iterdir() if p.name.endswith(suffix))
    if not files:
        raise DataError(f"no '*{suffix}' files in {split_dir}: pass the folder of the official HMDB51 split files")
    classes = [p.name[: -len(suffix)] for p in files]
    code_to_split = {"1": "train", "2": "test"}
    paths, labels, splits, problems = [], [], [], []
    for y, (cls, f) in enumerate(zip(classes, files)):
        for lineno, line in _lines(f):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                problems.append(f"{f.name} line {lineno}: expected '<video> 0|1|2', got {line!r}")
                continue
            if parts[1] == "0":
                continue
            paths.append(str(root / cls / parts[0]))
            labels.append(y)
            splits.append(code_to_split[parts[1]])
    if problems:
        raise DataError(f"{split_dir}: " + "; ".join(problems[:10]))
    labels = np.array(labels, dtype=np.int32)
    splits = _carve_val(labels, splits, classes, val_fraction, seed)
    _warn_missing(paths, f"HMDB51 fold {fold}")
    return Manifest(paths, labels, splits, classes, source=str(split_dir))


# ----------------------------------------------------------------------------------------------
# Kinetics


_KINETICS_SPLITS = {"train": "train", "training": "train", "validate": "val", "validation": "val",
                    "val": "val", "test": "test", "testing": "test"}


def kinetics_filename(youtube_id: str, time_start: int, time_end: int, ext: str = ".mp4") -> str:
    """The file name the common Kinetics downloaders write: `{id}_{start:06d}_{end:06d}.mp4`."""
    return f"{youtube_id}_{int(time_start):06d}_{int(time_end):06d}{ext}"


def manifest_from_kinetics(root: str | Path, csv_path: str | Path | Sequence[str | Path],
                           split_name: str | None = None) -> Manifest:
    """Kinetics (400/600/700) from the official CSV(s) `label,youtube_id,time_start,time_end,split`.

    Several CSVs (train, validate, test) may be given at once. The split column maps
    train -> train, validate/val -> val, test -> test; `split_name` assigns that split to every
    row instead (for a CSV without the column, or to report the official validation set as test).
    Videos are looked up in `root/<label>/` (label as written or with `_` for spaces) and in
    `root/`; a missing video keeps the first candidate path. A CSV without a `label` column (the
    unlabelled test set) gives label -1. Classes are the sorted label names (the official ids).
    """
    root = Path(root)
    csv_paths = [csv_path] if isinstance(csv_path, (str, Path)) else list(csv_path)
    if split_name is not None and split_name not in SPLITS:
        raise DataError(f"split_name must be one of {', '.join(SPLITS)}, got {split_name!r}")
    rows, problems = [], []
    for cp in csv_paths:
        cp = _need_file(cp, "Kinetics CSV")
        with open(cp, newline="") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            reader.fieldnames = header
            missing_cols = {"youtube_id", "time_start", "time_end"} - set(header)
            if missing_cols:
                raise DataError(f"{cp}: missing column(s) {', '.join(sorted(missing_cols))}; expected the "
                                f"official header label,youtube_id,time_start,time_end,split")
            if "split" not in header and split_name is None:
                raise DataError(f"{cp} has no 'split' column: say which split it is with split_name")
            for lineno, row in enumerate(reader, start=2):
                try:
                    start, end = int(float(row["time_start"])), int(float(row["time_end"]))
                except (TypeError, ValueError):
                    problems.append(f"{cp.name} line {lineno}: time_start/time_end must be numbers")
                    continue
                split = split_name
                if split is None:
                    raw = (row.get("split") or "").strip().lower()
                    if raw not in _KINETICS_SPLITS:
                        problems.append(f"{cp.name} line {lineno}: unknown split {raw!r} "
                                        f"(expected train, validate, val or test)")
                        continue
                    split = _KINETICS_SPLITS[raw]
                label = (row.get("label") or "").strip().strip('"')
                rows.append((label, row["youtube_id"].strip(), start, end, split))
    if problems:
        raise DataError("; ".join(problems[:10]))
    if not rows:
        raise DataError(f"the Kinetics CSV(s) {', '.join(map(str, csv_paths))} list no videos")

    classes = sorted({r[0] for r in rows if r[0]})
    index = {c: i for i, c in enumerate(classes)}
    paths, labels, splits = [], [], []
    for label, yid, start, end, split in rows:
        name = kinetics_filename(yid, start, end)
        candidates = [root / label / name, root / label.replace(" ", "_") / name] if label else []
        candidates.append(root / name)
        found = next((c for c in candidates if c.is_file()), candidates[0])
        paths.append(str(found))
        labels.append(index[label] if label else -1)
        splits.append(split)
    _warn_missing(paths, "Kinetics")
    return Manifest(paths, np.array(labels, dtype=np.int32), splits, classes, source=str(csv_paths[0]))


# ----------------------------------------------------------------------------------------------
# Something-Something v2


def ssv2_class(template: str) -> str:
    """The SSv2 class of a template: `Approaching [something] with your camera` -> without brackets."""
    return template.replace("[", "").replace("]", "")


def _read_json(path: str | Path, what: str):
    path = _need_file(path, what)
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def manifest_from_ssv2(root: str | Path, labels_json: str | Path, train_json: str | Path, val_json: str | Path,
                       test_json: str | Path | None = None, official_val_as: str = "test",
                       val_fraction: float = 0.05, seed: int = 0) -> Manifest:
    """Something-Something v2 from `labels.json`, `train.json`, `validation.json` (and `test.json`).

    Videos are `root/{id}.webm`; the class of a video is its `template` without brackets, with the
    ids of `labels.json`. With `official_val_as="test"` (default, as papers report) the official
    validation set is the test split and `val_fraction` of train (stratified, `seed`) becomes val;
    the official test set has no public labels, so `test_json` then is refused. With
    `official_val_as="val"` the official names are kept and `test_json` rows get label -1.
    """
    if official_val_as not in ("test", "val"):
        raise DataError(f"official_val_as must be 'test' or 'val', got {official_val_as!r}")
    if official_val_as == "test" and test_json is not None:
        raise DataError("the official SSv2 test set is unlabelled and the official validation set is "
                        "already the test split: drop test_json, or use official_val_as='val'")
    _check_fractions(val_fraction, 0.0)
    root = Path(root)
    label_map = _read_json(labels_json, "SSv2 labels json")
    if not isinstance(label_map, dict):
        raise DataError(f"{labels_json}: expected an object mapping class name -> id string")
    try:
        ids = {name: int(i) for name, i in label_map.items()}
    except (TypeError, ValueError):
        raise DataError(f"{labels_json}: every class id must be an integer string like \"0\"") from None
    if sorted(ids.values()) != list(range(len(ids))):
        raise DataError(f"{labels_json}: class ids must be 0..{len(ids) - 1}, each once")
    classes = [None] * len(ids)
    for name, i in ids.items():
        classes[i] = name
    # A template that differs from its label only in case still finds its class.
    ids_lower = {name.lower(): i for name, i in ids.items()}

    entries = [(train_json, "train", True), (val_json, "test" if official_val_as == "test" else "val", True)]
    if test_json is not None:
        entries.append((test_json, "test", False))
    paths, labels, splits, problems = [], [], [], []
    for jpath, split, labelled in entries:
        items = _read_json(jpath, f"SSv2 {split} json")
        if not isinstance(items, list):
            raise DataError(f"{jpath}: expected a list of {{\"id\": ..., \"template\": ...}} objects")
        for k, item in enumerate(items):
            vid = str(item.get("id", "")).strip() if isinstance(item, dict) else ""
            if not vid:
                problems.append(f"{Path(jpath).name} item {k}: no 'id'")
                continue
            y = -1
            if labelled:
                template = item.get("template")
                if template is None:
                    problems.append(f"{Path(jpath).name} item {k} (id {vid}): no 'template'")
                    continue
                name = ssv2_class(template)
                y = ids.get(name, ids_lower.get(name.lower(), -1))
                if y < 0:
                    problems.append(f"{Path(jpath).name} item {k} (id {vid}): class {name!r} not in labels json")
                    continue
            paths.append(str(root / f"{vid}.webm"))
            labels.append(y)
            splits.append(split)
    if problems:
        raise DataError("SSv2: " + "; ".join(problems[:10]) + (" ..." if len(problems) > 10 else ""))
    labels = np.array(labels, dtype=np.int32)
    if official_val_as == "test":
        splits = _carve_val(labels, splits, classes, val_fraction, seed)
    _warn_missing(paths, "SSv2")
    return Manifest(paths, labels, splits, classes, source=str(train_json))


# ----------------------------------------------------------------------------------------------
# the registry (vidcache/data/config.py: torch- and numpy-free, so the CLI lists it at once)


def import_manifest(format: str, root: str | Path, **kwargs) -> Manifest:
    """Run the importer of `format` (one of `IMPORTERS`) with its own keyword arguments."""
    if format not in IMPORTERS:
        raise DataError(unknown_format(format))
    return IMPORTERS[format].load()(root, **kwargs)
