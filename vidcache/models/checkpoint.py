"""Reading and writing checkpoints safely, and the `vidcache-checkpoint` format that `pretrain` writes.

Safety: a checkpoint is untrusted input. `torch.load(weights_only=True)` restores only tensors and
plain containers, so a file cannot run code when it is opened; a file that needs more (a pickled
custom class) is refused unless the caller passes `trust=True` (the CLI's `--trust-checkpoint`).

The vidcache format is one dict saved with `torch.save`:

    {"format": "vidcache-checkpoint",
     "model_config": {...},          # VisionTransformer keyword arguments
     "target_encoder": state_dict,   # the EMA encoder, used for feature extraction
     "encoder": state_dict,          # optional: the online encoder
     "step": int,
     "preprocess": {"mean": [...], "std": [...], "frame_stride": int},   # optional
     ...}                            # anything else the trainer needs (optimizer, predictor, ...)
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from vidcache.errors import VidcacheError

CHECKPOINT_FORMAT = "vidcache-checkpoint"


def save_checkpoint_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """`torch.save` to a temp file in the same folder, fsync, then rename over `path`.

    A run killed mid-write leaves the previous checkpoint intact instead of a torn file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _unpickling_reason(err: Exception) -> str:
    """The one informative line of torch's long weights-only refusal message."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    for ln in lines:
        if "Unsupported global" in ln or "Unsupported operand" in ln:
            return ln
    return lines[0] if lines else type(err).__name__


def _looks_like_torch_file(path: Path) -> bool:
    """torch.save writes a zip archive (torch >= 1.6) or, in the legacy format, a pickle (first byte 0x80).

    Checked first because torch's safe unpickler reports random bytes as forbidden Python objects,
    which would wrongly advise --trust-checkpoint for a corrupt file.
    """
    import zipfile

    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as f:
        return f.read(1) == b"\x80"


def load_checkpoint(path: str | os.PathLike, *, trust: bool = False) -> Any:
    """Load a checkpoint on CPU: safetensors as a state dict, anything else with `torch.load`.

    Without `trust`, only tensors and plain containers are restored (`weights_only=True`); a file
    that holds other Python objects raises a VidcacheError that names `--trust-checkpoint`.
    """
    path = Path(path)
    if not path.is_file():
        raise VidcacheError(f"checkpoint {path} does not exist (give the path of a saved model file)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as err:  # safetensors raises its own SafetensorError for torn headers
            raise VidcacheError(f"cannot read safetensors file {path}: {err}") from err
    if not _looks_like_torch_file(path):
        raise VidcacheError(f"cannot read checkpoint {path}: not a PyTorch checkpoint (neither a zip archive "
                            f"nor a pickle; the file is corrupt, truncated, or another kind of file)")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as err:
        if not trust and "Weights only load failed" in str(err):
            raise VidcacheError(
                f"checkpoint {path} holds Python objects beyond tensors ({_unpickling_reason(err)}); "
                "loading it can run arbitrary code, so pass --trust-checkpoint (trust_checkpoint=True) "
                "only if you trust where the file came from") from err
        raise VidcacheError(f"cannot read checkpoint {path}: not a PyTorch checkpoint "
                            f"({_unpickling_reason(err)})") from err
    except Exception as err:  # a damaged pickle fails in many ways (IndexError, KeyError, EOFError...)
        raise VidcacheError(f"cannot read checkpoint {path}: {type(err).__name__}: {_unpickling_reason(err)} "
                            "(the file is truncated or not a PyTorch checkpoint)") from err


def strip_prefixes(state: Mapping[str, Any], prefixes: tuple[str, ...] = ("module.", "backbone.")) -> dict:
    """Remove wrapper prefixes (DDP's `module.`, jepa's `backbone.`) from the front of every key."""
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if key.startswith(p):
                    key, changed = key[len(p):], True
        out[key] = value
    return out


def _few(keys: list[str], n: int = 5) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f" and {len(keys) - n} more" if len(keys) > n else "")


def load_state_dict_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load every tensor of `state` into `module`, refusing missing, unexpected or mis-shaped keys.

    torch's own strict load reports the same problems as a multi-line RuntimeError; this names the
    keys on one line so a user sees at once which checkpoint and which tensors disagree.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}" for k in own
                  if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys: {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_few(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch: {_few(mismatched)}")
    if problems:
        raise VidcacheError(f"weights in {source} do not fit the model ({'; '.join(problems)}); "
                            "check that the checkpoint and the model options (size, patch, frames) match")
    module.load_state_dict(dict(state), strict=True)


def make_checkpoint(model_config: Mapping[str, Any], target_encoder: Mapping[str, torch.Tensor], *,
                    encoder: Mapping[str, torch.Tensor] | None = None, step: int = 0,
                    preprocess: Mapping[str, Any] | None = None, **extra: Any) -> dict:
    """The dict `save_checkpoint_atomic` writes for a vidcache-trained encoder."""
    ckpt = {"format": CHECKPOINT_FORMAT, "model_config": dict(model_config),
            "target_encoder": dict(target_encoder), "step": int(step)}
    if encoder is not None:
        ckpt["encoder"] = dict(encoder)
    if preprocess is not None:
        ckpt["preprocess"] = dict(preprocess)
    ckpt.update(extra)
    return ckpt


def read_vidcache_checkpoint(path: str | os.PathLike, *, trust: bool = False) -> dict:
    """Load and check a `vidcache-checkpoint` file; raises a VidcacheError naming what is wrong."""
    ckpt = load_checkpoint(path, trust=trust)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise VidcacheError(f"{path} is not a vidcache checkpoint (no 'format': '{CHECKPOINT_FORMAT}'); "
                            "for facebookresearch/jepa checkpoints use the 'vjepa:' prefix")
    problems = []
    if not isinstance(ckpt.get("model_config"), dict):
        problems.append("'model_config' (a dict of VisionTransformer options) is missing")
    if not isinstance(ckpt.get("target_encoder"), dict) and not isinstance(ckpt.get("encoder"), dict):
        problems.append("neither 'target_encoder' nor 'encoder' weights are present")
    if problems:
        raise VidcacheError(f"vidcache checkpoint {path} is incomplete: {'; '.join(problems)}")
    return ckpt
