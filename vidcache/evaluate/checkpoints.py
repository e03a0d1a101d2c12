"""Checkpoints of a plan: expanding globs, reading the training step and FLOPs, loading a backbone or its error.

A checkpoint's identity is its content: the store it is extracted into is found by a config hash
that includes the digest of its weights, so two files with the same name but different weights
never share a store or a result, and a file moved to another folder still finds its store.
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidcache.config import canonical_json, save_json
from vidcache.errors import VidcacheError
from vidcache.evaluate.plan import CheckpointSpec, Plan

# Longest names first so "checkpoint" is not read as "ckpt"-less "point"; epochs are flagged apart.
_STEP_RE = re.compile(r"(?:^|[^a-z])(step|steps|iter|itr|iteration|it|ckpt|checkpoint|epoch|ep)[_=\-]?(\d+)",
                      re.IGNORECASE)
_BARE_NUMBER_RE = re.compile(r"(\d+)")


@dataclass
class CheckpointRef:
    """One checkpoint to evaluate: a file with a format, or a registry backbone name."""

    label: str  # as shown in tables: the path as given, or the backbone name
    backbone: str  # a registry name, or for files the format: auto, vidcache, vjepa, torchscript
    options: dict
    run: str  # group of checkpoints drawn as one line in plots (folder, or the spec's name)
    path: str = ""
    trust: bool = False

    @property
    def is_file(self) -> bool:
        return bool(self.path)


def step_from_name(name: str) -> tuple[int | None, str]:
    """The training step in a file name: (step, unit) with unit "step" or "epoch", or (None, "").

    `ckpt_000500.pt`, `step=500.pt`, `model-iter500.pth` -> (500, "step"); `epoch_3.pt` -> (3, "epoch");
    `latest.pt` -> (None, ""). A name with one bare number (`jepa-500.pth.tar`) gives that number.
    """
    stem = Path(name).name
    for suffix in (".safetensors", ".tar", ".pth", ".pt", ".ckpt"):
        stem = stem.removesuffix(suffix)
    found = _STEP_RE.findall(stem)
    if found:
        word, num = found[-1]
        unit = "epoch" if word.lower() in ("epoch", "ep") else "step"
        return int(num), unit
    nums = _BARE_NUMBER_RE.findall(stem)
    if len(nums) == 1:
        return int(nums[0]), "step"
    return None, ""


def _peek(path: str) -> dict | None:
    """The top level of a torch checkpoint without reading its tensors (mmap), or None."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # torn, not a zip archive, or holds pickled objects: the loader reports why
        return None
    return obj if isinstance(obj, dict) else None


def step_of(ref: CheckpointRef, top: dict | None = None) -> tuple[int | None, str, str]:
    """(step, unit, source): the checkpoint's own metadata first, then its file name.

    `top` is the file's top level when the caller has already read it (see `inspect`).
    """
    if ref.is_file:
        meta: dict[str, Any] = {}
        if top is not None:
            meta = top
        elif ref.path.endswith(".safetensors"):
            try:
                from safetensors import safe_open

                with safe_open(ref.path, "pt") as f:
                    meta = dict(f.metadata() or {})
            except Exception:
                meta = {}
        else:
            meta = _peek(ref.path) or {}
        for key, unit in (("step", "step"), ("global_step", "step"), ("itr", "step"), ("iteration", "step"),
                          ("epoch", "epoch")):
            value = meta.get(key)
            try:
                if value is not None and not isinstance(value, bool):
                    return int(value), unit, "metadata"
            except (TypeError, ValueError):
                pass
        step, unit = step_from_name(ref.path)
        if step is not None:
            return step, unit, "file name"
    return None, "", ""


def detect_format(path: str, top: dict | None = None) -> str:
    """vidcache or vjepa for a torch file (by its `format` entry), torchscript for a scripted archive."""
    top = _peek(path) if top is None else top
    if top is not None and top.get("format") == "vidcache-checkpoint":
        return "vidcache"
    if top is None and path.endswith((".pt", ".pth")):
        import zipfile

        try:
            with zipfile.ZipFile(path) as z:
                if any(n.endswith("/code/__torch__.py") or "/code/" in n for n in z.namelist()):
                    return "torchscript"
        except (zipfile.BadZipFile, OSError):
            pass
    return "vjepa"


def _run_name(spec: CheckpointSpec, path: str) -> str:
    return spec.name or Path(path).parent.name or "run"


def expand(spec: CheckpointSpec, trust_all: bool = False) -> list[CheckpointRef]:
    """The checkpoints one plan entry names: every file a glob matches (sorted by step, then name)."""
    trust = bool(spec.trust_checkpoint or trust_all)
    if spec.backbone:
        label = spec.backbone if not spec.options else f"{spec.backbone}{_options_label(spec.options)}"
        return [CheckpointRef(label=label, backbone=spec.backbone, options=dict(spec.options),
                              run=spec.name or spec.backbone, trust=trust)]
    paths = sorted(glob.glob(spec.path)) if glob.has_magic(spec.path) else [spec.path]
    paths = [p for p in paths if Path(p).is_file() and not Path(p).name.startswith(".")]
    paths.sort(key=lambda p: (step_from_name(p)[0] is None, step_from_name(p)[0] or 0, p))
    # Options are part of the label, so one file evaluated two ways (a TDV run's feature=cls and
    # part=motion) gives two rows, as a registry name with options does.
    suffix = _options_label(spec.options) if spec.options else ""
    return [CheckpointRef(label=p + suffix, backbone=spec.format, options=dict(spec.options),
                          run=_run_name(spec, p), path=p, trust=trust) for p in paths]


def _options_label(options: dict) -> str:
    return "(" + ",".join(f"{k}={v}" for k, v in sorted(options.items())) + ")"


def resolve_checkpoints(plan: Plan) -> list[CheckpointRef]:
    """Every checkpoint of the plan, in plan order; duplicates (same file or name+options) once."""
    seen, out = set(), []
    for spec in plan.checkpoints:
        for ref in expand(spec, plan.run.trust_checkpoint):
            key = (str(Path(ref.path).resolve()) if ref.path else ref.backbone, repr(sorted(ref.options.items())))
            if key not in seen:
                seen.add(key)
                out.append(ref)
    return out


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def identity(ref: CheckpointRef) -> str | None:
    """A key for what a file checkpoint is: its bytes, file name, format and options (None for names).

    Registry names are not keyed: what `hf:` or `timm:` resolve to can change with a local cache.
    """
    if not ref.is_file:
        return None
    import vidcache

    body = [file_digest(ref.path), Path(ref.path).name, ref.backbone, sorted(ref.options.items()),
            vidcache.__version__]
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def pretrain_flops_of(top: dict | None) -> int | None:
    """The training FLOPs a `vidcache pretrain` checkpoint records (`pretrain_flops`), else None."""
    value = (top or {}).get("pretrain_flops")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return None
    return int(value)


def inspect(ref: CheckpointRef) -> dict:
    """Format, step and pretraining FLOPs of a checkpoint, reading a file's top level once."""
    if not ref.is_file:
        return {"format": "", "step": [None, "", ""], "pretrain_flops": None}
    top = None if ref.path.endswith(".safetensors") else _peek(ref.path)
    fmt = ref.backbone if ref.backbone != "auto" else detect_format(ref.path, top)
    return {"format": fmt, "step": list(step_of(ref, top)), "pretrain_flops": pretrain_flops_of(top)}


class IdentityCache:
    """What was learned about a checkpoint file, keyed by `identity`: format, step, store hashes.

    One small JSON file per key, so concurrent processes never rewrite each other's entries. A
    rerun finds a checkpoint's stores and results from its bytes without building the model.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def get(self, key: str | None) -> dict:
        if key is None:
            return {}
        try:
            return json.loads((self.folder / f"{key}.json").read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def update(self, key: str | None, **values: Any) -> None:
        if key is None:
            return
        data = self.get(key)
        for k, v in values.items():
            if isinstance(v, dict) and isinstance(data.get(k), dict):
                data[k] = {**data[k], **v}
            else:
                data[k] = v
        save_json(data, self.folder / f"{key}.json")


def _looks_like_torch_file(path: str) -> bool:
    """A zip archive (torch.save since 1.6) or a pickle (legacy torch.save starts with a protocol mark)."""
    import zipfile

    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return zipfile.is_zipfile(path) or (len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def load_backbone(ref: CheckpointRef, fmt: str = ""):
    """Create the backbone of a checkpoint (its `.name` is set to a path-free label, see below).

    The store's config hash covers the backbone name; a file's name there is `<prefix>:<file name>`
    (not its folder), so the hash depends on the weights and the file name only. Raises
    VidcacheError with the loader's reason (corrupt file, untrusted pickle, wrong architecture).
    """
    from vidcache.models import create_backbone

    options = dict(ref.options)
    if ref.trust:
        options["trust_checkpoint"] = True
    if ref.is_file:
        fmt = fmt if fmt and fmt != "auto" else inspect(ref)["format"]
    name = f"{fmt}:{ref.path}" if ref.is_file else ref.backbone
    try:
        bb = create_backbone(name, **options)
    except VidcacheError as e:
        if ref.is_file and "--trust-checkpoint" in str(e) and not _looks_like_torch_file(ref.path):
            # torch's safe unpickler reports arbitrary bytes as an unsafe opcode: trusting would not help.
            raise VidcacheError(f"cannot read checkpoint {ref.path}: not a PyTorch checkpoint "
                                "(corrupt, truncated, or another kind of file)") from e
        raise
    except Exception as e:  # a loader bug or an exotic file: still this checkpoint's error, not the run's
        raise VidcacheError(f"cannot load {ref.label}: {type(e).__name__}: {e}") from e
    if ref.is_file:
        bb.name = f"{fmt}:{Path(ref.path).name}"
    return bb
