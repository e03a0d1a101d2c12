"""prune: stores a plan no longer needs, and ages given as durations."""

from pathlib import Path

import pytest

from vidcache.evaluate.prune import prune
from vidcache.evaluate.run import run_plan


def test_prune_lists_then_removes_stores_the_plan_no_longer_needs(tmp_path, synth_corpus, save_tiny, make_plan,
                                                                  probes):
    manifest, _ = synth_corpus
    a = save_tiny(tmp_path / "ckpt_000100.pt", seed=1, step=100)
    b = save_tiny(tmp_path / "ckpt_000200.pt", seed=2, step=200)
    both = make_plan(manifest, [{"path": str(a)}, {"path": str(b)}], probes=probes[:1])
    rows = run_plan(both, tmp_path / "res")
    only_b = make_plan(manifest, [{"path": str(b)}], probes=probes[:1])
    store_a = next(r["store"] for r in rows if Path(r["checkpoint"]) == a)
    items = prune(tmp_path / "res", plan=only_b, dry_run=True)
    assert [i.path for i in items] == [store_a] and items[0].bytes > 0 and Path(store_a).exists()
    assert prune(tmp_path / "res", older_than_s=3600) == []  # everything is fresh
    prune(tmp_path / "res", plan=only_b, dry_run=False)
    assert not Path(store_a).exists()
    assert len(list((tmp_path / "res" / "stores" / "synth").glob("*.zarr"))) == 1
    # Its results stay: rerunning the full plan reuses them without re-extracting.
    again = run_plan(both, tmp_path / "res")
    assert all(r["cached"] for r in again) and not Path(store_a).exists()


@pytest.mark.parametrize("text, seconds", [("30d", 30 * 86400), ("12h", 12 * 3600), ("45m", 2700), ("90s", 90),
                                           ("2w", 14 * 86400), ("1.5", 1.5 * 86400), (" 0d ", 0)])
def test_prune_ages_are_durations(text, seconds):
    from vidcache.evaluate.prune import parse_duration

    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["-1d", "-5", "abc", "30x", "", "inf", "nan"])
def test_prune_refuses_negative_or_malformed_ages(text, tmp_path):
    from vidcache.errors import VidcacheError
    from vidcache.evaluate.prune import parse_duration

    with pytest.raises(VidcacheError, match="--older-than"):
        parse_duration(text)
    with pytest.raises(VidcacheError, match="older_than_s must be >= 0"):
        prune(tmp_path, older_than_s=-1.0)
