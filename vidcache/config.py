"""Typed dataclass configs: validation that reports every problem at once, canonical JSON and hashes.

Every config in vidcache is a dataclass whose fields carry a docstring-like `help` in their metadata.
`validate()` methods return a list of problems (empty when fine); `check(cfg)` raises one
`ConfigError` that lists them all, so a user fixes a config in one round instead of one per run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from vidcache.errors import ConfigError


def field(default: Any = dataclasses.MISSING, *, help: str = "", default_factory: Any = dataclasses.MISSING,
          hashed: bool = True):
    """A dataclass field with a help text; `hashed=False` keeps it out of the config hash.

    Fields that change the data a run produces are hashed; fields that only change how fast or
    where it runs (batch size, workers, device) are not, so resuming with more workers is allowed.
    """
    meta = {"help": help, "hashed": hashed}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def to_dict(cfg: Any) -> dict:
    """A dataclass (possibly nested) as plain JSON-able values."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, dict):
        return {str(k): to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def hashed_dict(cfg: Any) -> dict:
    """The fields of a config that change its output (those not marked `hashed=False`)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: hashed_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)
                if f.metadata.get("hashed", True)}
    return to_dict(cfg)


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no spaces: equal configs give equal strings."""
    return json.dumps(to_dict(obj), sort_keys=True, separators=(",", ":"), default=str)


def config_hash(cfg: Any) -> str:
    """sha256 of the canonical JSON of the hashed fields (a dict is hashed whole)."""
    data = hashed_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()


def diff_fields(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted names of the fields that differ between two config dicts (for refusal messages)."""
    out = []
    for key in sorted(set(a) | set(b)):
        name = f"{prefix}{key}"
        va, vb = a.get(key, "<missing>"), b.get(key, "<missing>")
        if isinstance(va, dict) and isinstance(vb, dict):
            out += diff_fields(va, vb, name + ".")
        elif va != vb:
            out.append(f"{name} ({va!r} != {vb!r})")
    return out


def check(cfg: Any, what: str | None = None) -> Any:
    """Raise one ConfigError listing every problem `cfg.validate()` reports; return cfg otherwise."""
    problems = cfg.validate() if hasattr(cfg, "validate") else []
    if problems:
        raise ConfigError(problems, what or type(cfg).__name__)
    return cfg


def from_dict(cls: type, data: dict, what: str | None = None):
    """Build a dataclass from a dict, reporting unknown keys with the others' problems."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    problems = [f"unknown field {k!r} (known: {', '.join(sorted(names))})" for k in unknown]
    if problems:
        raise ConfigError(problems, what or cls.__name__)
    return check(cls(**data), what)


def save_json(obj: Any, path: str | Path) -> None:
    """Write JSON atomically (temp file + rename), so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(to_dict(obj), indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)
