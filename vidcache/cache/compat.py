"""Whether two clip stores (or a store and a run trained on one) hold comparable features.

Heads trained on one store and tested on another, or a SCALE run applied to a store it was not
trained on, give numbers only when both hold the same dataset's classes and embeddings of the same
extraction: same backbone (name and weights digest), preprocessing, clip length, stride and dtype.
The sampling protocol and the stored tokens may differ (a SCALE training store holds `random:16`
clips, its evaluation store `5x3`): they choose which clips are embedded, not what an embedding
means. Anything else that differs is refused in one line naming both sides, unless the caller
passes an explicit override.
"""

from __future__ import annotations

from typing import Any

from vidcache.config import diff_fields
from vidcache.errors import StoreError

# Fields of the extraction config that choose clips, not the meaning of an embedding.
SAMPLING_FIELDS = ("protocol", "tokens")


def feature_identity(store: Any) -> dict:
    """The hashed extraction config of a clip store, without its sampling fields."""
    attrs = getattr(store, "attrs", {}) or {}
    hashed = attrs.get("config_hashed") or getattr(store, "config", {}) or {}
    out = {k: v for k, v in hashed.items() if k != "extract" and k not in SAMPLING_FIELDS}
    if isinstance(hashed.get("extract"), dict):
        out["extract"] = {k: v for k, v in hashed["extract"].items() if k not in SAMPLING_FIELDS}
    return out


def _label(what: str, store: Any) -> str:
    return f"{what} {getattr(store, 'url', store)}"


def _short(classes: list[str], n: int = 4) -> str:
    head = ", ".join(classes[:n])
    return f"[{head}{', ...' if len(classes) > n else ''}] ({len(classes)} classes)"


def mismatch(a: Any, b: Any, what_a: str, what_b: str) -> str | None:
    """Why stores `a` and `b` cannot be compared (one line), or None when they can."""
    ca, cb = list(getattr(a, "classes", []) or []), list(getattr(b, "classes", []) or [])
    if ca and cb and ca != cb:
        return (f"{_label(what_a, a)} has classes {_short(ca)} but {_label(what_b, b)} has {_short(cb)}: "
                f"they are not one dataset")
    diffs = diff_fields(feature_identity(a), feature_identity(b))
    if diffs:
        shown = ", ".join(diffs[:3]) + (f" and {len(diffs) - 3} more" if len(diffs) > 3 else "")
        return f"{_label(what_a, a)} and {_label(what_b, b)} hold features of different extractions ({shown})"
    return None


def check_compatible(a: Any, b: Any, what_a: str, what_b: str, *, allow: bool = False,
                     override: str = "--allow-mismatch") -> None:
    """Raise a one-line StoreError when `a` and `b` hold different classes or features, unless `allow`."""
    problem = mismatch(a, b, what_a, what_b)
    if problem and not allow:
        raise StoreError(f"{problem}; use stores of one dataset and one extraction, or pass {override} "
                         f"to compare them anyway")


def check_source(source: dict, store: Any, what_run: str, what_store: str, *, allow: bool = False,
                 override: str = "--allow-mismatch") -> None:
    """A run's recorded source store (`source["features"]`) against a store it is applied to."""
    features = source.get("features")
    if not features or allow:
        return
    diffs = diff_fields(features, feature_identity(store))
    if diffs:
        shown = ", ".join(diffs[:3]) + (f" and {len(diffs) - 3} more" if len(diffs) > 3 else "")
        raise StoreError(f"{what_run} was trained on {source.get('store', 'a store')} whose features differ from "
                         f"{_label(what_store, store)} ({shown}); use stores of the run's extraction, or pass "
                         f"{override} to apply it anyway")
