"""Backbone registry: named factories (`@register_backbone`) and prefix handlers (`@register_prefix`).

    create_backbone("tiny", seed=0)                  # a registered name
    create_backbone("hf:MCG-NJU/videomae-base")      # a prefix handler gets the text after "hf:"
    create_backbone("vjepa:/ckpt/vitl16.pth.tar", which="encoder")

Options a factory does not take are refused with the list of those it does, instead of a TypeError
from deep inside a constructor.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
from typing import Any, Callable

from vidcache.errors import ConfigError, VidcacheError
from vidcache.models.backbone import Backbone

_BACKBONES: dict[str, Callable[..., Backbone]] = {}
_PREFIXES: dict[str, Callable[..., Backbone]] = {}
_PREFIX_HELP: dict[str, str] = {}
_BUILTIN_MODULES = ("vidcache.models.builtin", "vidcache.models.hf", "vidcache.models.timm_models")


def register_backbone(name: str) -> Callable[[Callable[..., Backbone]], Callable[..., Backbone]]:
    """Decorator: make a factory `fn(**options) -> Backbone` available as `create_backbone(name)`."""
    if ":" in name:
        raise ValueError(f"backbone names cannot contain ':' (reserved for prefixes): {name!r}")

    def deco(fn: Callable[..., Backbone]) -> Callable[..., Backbone]:
        if name in _BACKBONES and _BACKBONES[name] is not fn:
            raise ValueError(f"backbone {name!r} is already registered by {_BACKBONES[name].__module__}")
        _BACKBONES[name] = fn
        return fn

    return deco


def register_prefix(prefix: str, usage: str = "") -> Callable[[Callable[..., Backbone]], Callable[..., Backbone]]:
    """Decorator: `create_backbone("<prefix>:<arg>", **options)` calls `fn(arg, **options)`.

    `usage` is shown in error messages, e.g. "hf:<hub id or local dir>".
    """
    prefix = prefix.rstrip(":")

    def deco(fn: Callable[..., Backbone]) -> Callable[..., Backbone]:
        if prefix in _PREFIXES and _PREFIXES[prefix] is not fn:
            raise ValueError(f"backbone prefix {prefix!r} is already registered by {_PREFIXES[prefix].__module__}")
        _PREFIXES[prefix] = fn
        _PREFIX_HELP[prefix] = usage or f"{prefix}:<arg>"
        return fn

    return deco


def _load_builtins() -> None:
    # Imported lazily: the built-in modules register themselves on import and import this module.
    for mod in _BUILTIN_MODULES:
        importlib.import_module(mod)


def list_backbones(pattern: str = "*") -> list[str]:
    """Registered backbone names matching a glob pattern, sorted (prefix forms are not listed)."""
    _load_builtins()
    return sorted(n for n in _BACKBONES if fnmatch.fnmatch(n, pattern))


def is_backbone(name: str) -> bool:
    """Whether `name` is a registered backbone or `prefix:arg` with a registered prefix (nothing is built)."""
    _load_builtins()
    prefix, sep, arg = name.partition(":")
    return name in _BACKBONES or bool(sep and arg and prefix in _PREFIXES)


def backbone_problems(name: str) -> list[str]:
    """[] for a known backbone, else one problem naming the close matches and the registered prefixes."""
    if is_backbone(name):
        return []
    prefix, sep, arg = name.partition(":")
    if sep and not arg and prefix in _PREFIXES:
        return [f"backbone {name!r} is missing its argument: use {_PREFIX_HELP[prefix]}"]
    return [_unknown_message(name)]


def list_prefixes() -> list[str]:
    """Usage strings of the registered prefixes, e.g. 'hf:<hub id or local dir>'."""
    _load_builtins()
    return [_PREFIX_HELP[p] for p in sorted(_PREFIXES)]


def _check_options(fn: Callable[..., Any], options: dict[str, Any], what: str, skip_first: bool) -> None:
    """Refuse options the factory does not take; drops `trust_checkpoint` where nothing is loaded."""
    params = list(inspect.signature(fn).parameters.values())
    if skip_first:
        params = params[1:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    known = [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    # --trust-checkpoint is a run-wide flag; a backbone that reads no pickle has nothing to trust.
    if "trust_checkpoint" not in known:
        options.pop("trust_checkpoint", None)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError([f"unknown option {k!r} (options: {', '.join(known) or 'none'})" for k in unknown],
                          f"backbone {what}")


def create_backbone(name: str, **options: Any) -> Backbone:
    """Build a backbone by registered name or `prefix:arg`, in eval mode, with `.name` set to `name`."""
    _load_builtins()
    if name in _BACKBONES:
        fn = _BACKBONES[name]
        _check_options(fn, options, repr(name), skip_first=False)
        model = fn(**options)
    else:
        prefix, sep, arg = name.partition(":")
        if sep and prefix in _PREFIXES:
            if not arg:
                raise VidcacheError(f"backbone {name!r} is missing its argument: use {_PREFIX_HELP[prefix]}")
            fn = _PREFIXES[prefix]
            _check_options(fn, options, repr(name), skip_first=True)
            model = fn(arg, **options)
        else:
            raise VidcacheError(_unknown_message(name))
    if not isinstance(model, Backbone):
        raise TypeError(f"factory for {name!r} returned {type(model).__name__}, not a Backbone")
    model.name = name
    return model.eval()


def _unknown_message(name: str) -> str:
    prefix, sep, _ = name.partition(":")
    prefixes = ", ".join(_PREFIX_HELP[p] for p in sorted(_PREFIXES))
    if sep:
        close = difflib.get_close_matches(prefix, list(_PREFIXES), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c + ':') for c in close)}?" if close else ""
        return f"unknown backbone prefix {prefix + ':'!r} in {name!r}{hint} (known prefixes: {prefixes})"
    close = difflib.get_close_matches(name, list(_BACKBONES), n=5, cutoff=0.5)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    return (f"unknown backbone {name!r}; {hint}registered: {', '.join(sorted(_BACKBONES))}; "
            f"or use a prefix: {prefixes}")
