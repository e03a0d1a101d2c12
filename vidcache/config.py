"""Typed dataclass configs: validation that reports every problem at once, canonical JSON and hashes.

Every config in vidcache is a dataclass whose fields carry a docstring-like `help` in their metadata.
`validate()` methods return a list of problems (empty when fine); `check(cfg)` raises one
`ConfigError` that lists them all, so a user fixes a config in one round instead of one per run.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import numbers
import re
import types
import typing
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


# ---------------------------------------------------------------------------------------------
# Field types: a value of the wrong kind is a problem like any other, found before validate() runs,
# so a CLI option, a plan entry or a JSON config with text where a number belongs gets one line, not
# a TypeError from the first comparison.

@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation that cannot be resolved is not checked
        return {}


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


_SCALARS = {int: (_is_int, "an integer"), float: (_is_number, "a number"), str: (lambda v: isinstance(v, str), "text"),
            bool: (lambda v: isinstance(v, bool), "true or false")}


def _element_kind(values: Any) -> type | None:
    """The element type a bare `list`/`tuple` field holds, read from its default (None when mixed or empty)."""
    if not isinstance(values, (list, tuple)) or not values:
        return None
    if all(_is_int(v) for v in values):
        return int
    if all(_is_number(v) for v in values):
        return float
    if all(isinstance(v, str) for v in values):
        return str
    return None


def _type_ok(value: Any, hint: Any, default: Any = None) -> tuple[bool, str]:
    """(value fits hint, what was expected); unknown hints always fit."""
    if hint is Any or hint is None:
        return True, ""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return True, ""
        wants = []
        for arg in args:
            if arg is type(None):
                continue
            ok, want = _type_ok(value, arg, default)
            if ok:
                return True, ""
            wants.append(want)
        return False, " or ".join(w for w in wants if w) + (" or none" if type(None) in args else "")
    if hint in _SCALARS:
        test, want = _SCALARS[hint]
        return test(value), want
    if hint in (list, tuple) or origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False, "a list"
        args = typing.get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                return False, f"a list of {len(args)} values"
            kinds = list(args)
        elif args:
            kinds = [args[0]] * len(value)
        else:
            kind = _element_kind(default)
            kinds = [kind] * len(value) if kind is not None else []
        for v, kind in zip(value, kinds):
            ok, want = _type_ok(v, kind)
            if not ok:
                return False, f"a list of {_plural(want)}"
        return True, ""
    if hint is dict or origin is dict:
        return isinstance(value, dict), "a table (JSON object)"
    return True, ""  # arrays, tensors, nested classes: not a user-facing field


def _plural(want: str) -> str:
    return {"an integer": "integers", "a number": "numbers", "text": "text values",
            "true or false": "true/false values"}.get(want, want)


def type_problems(cfg: Any) -> list[str]:
    """One message per field of a config dataclass whose value is not of its annotated type."""
    if not dataclasses.is_dataclass(cfg):
        return []
    hints = _hints(type(cfg))
    problems = []
    for f in dataclasses.fields(cfg):
        if f.name not in hints:
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        value = getattr(cfg, f.name)
        ok, want = _type_ok(value, hints[f.name], default)
        if not ok:
            problems.append(f"{f.name} must be {want}, got {value!r}")
    return problems


def problems_of(cfg: Any) -> list[str]:
    """Every problem of a config: wrongly typed fields, then what its `validate()` reports.

    `validate()` is written for well-typed fields, so it runs on a copy whose mistyped fields hold
    their defaults; its messages about those fields are left out (the type problem stands for them).
    """
    problems = type_problems(cfg)
    if not hasattr(cfg, "validate"):
        return problems
    bad = [p.split(" ", 1)[0] for p in problems]
    probe = cfg
    if bad:
        defaults = {}
        for f in dataclasses.fields(cfg):
            if f.name in bad and f.default is not dataclasses.MISSING:
                defaults[f.name] = f.default
            elif f.name in bad and f.default_factory is not dataclasses.MISSING:
                defaults[f.name] = f.default_factory()
        try:
            probe = dataclasses.replace(cfg, **defaults)
        except Exception:  # a __post_init__ that cannot take the defaults: report the types alone
            return problems
    try:
        found = probe.validate()
    except (TypeError, ValueError, AttributeError, IndexError):
        if not problems:
            raise
        return problems
    return problems + [p for p in found if not any(re.search(rf"\b{re.escape(b)}\b", p) for b in bad)]


def check(cfg: Any, what: str | None = None) -> Any:
    """Raise one ConfigError listing every problem of `cfg` (types, then `validate()`); return cfg otherwise."""
    problems = problems_of(cfg)
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
