"""Shared pieces of the batch re-evaluation tests: tiny checkpoints, plans, a probe counter."""

import pytest

from vidcache.evaluate import run as run_mod
from vidcache.evaluate.plan import parse_plan
from vidcache.models import create_backbone
from vidcache.models.checkpoint import make_checkpoint, save_checkpoint_atomic

PROBES = [{"type": "knn", "ks": [3]},
          {"type": "linear", "lrs": [1e-2], "wds": [1e-3], "epochs": 2}]


def _save_tiny(path, seed, step=None, **extra):
    """A vidcache-format checkpoint of a `tiny` (32 px) model; weights differ by seed."""
    bb = create_backbone("tiny", seed=seed, image_size=32)
    ckpt = make_checkpoint(bb.vit.config, bb.vit.state_dict(), step=step or 0,
                           preprocess={"mean": list(bb.mean), "std": list(bb.std), "frame_stride": 2}, **extra)
    if step is None:
        del ckpt["step"]
    return save_checkpoint_atomic(ckpt, path)


def _make_plan(manifest, checkpoints, probes=PROBES, **run):
    return parse_plan({"run": {"workers": 0, "batch_size": 8, **run}, "checkpoints": checkpoints,
                       "datasets": [{"name": "synth", "manifest": str(manifest), "protocol": "1x1"}],
                       "probes": [dict(p) for p in probes]})


@pytest.fixture
def save_tiny():
    """save_tiny(path, seed, step=None, **extra) -> path of a tiny vidcache checkpoint."""
    return _save_tiny


@pytest.fixture
def make_plan():
    """make_plan(manifest, checkpoints, probes=PROBES, **run) -> a Plan over the synthetic corpus."""
    return _make_plan


@pytest.fixture
def probes():
    """The two probes most plans run: kNN (k=3) and a 2-epoch linear grid of one head."""
    return [dict(p) for p in PROBES]


@pytest.fixture
def count_probes(monkeypatch):
    """The (probe name, store url) of every probe run_plan runs, in order."""
    calls = []
    real = run_mod._run_probe

    def counted(probe, cfg, store_url, out):
        calls.append((probe.name, store_url))
        return real(probe, cfg, store_url, out)

    monkeypatch.setattr(run_mod, "_run_probe", counted)
    return calls
