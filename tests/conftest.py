import os

import numpy as np
import pytest
import torch

# Tests share 2 cores with DataLoader workers: one intra-op thread keeps timings sane and results
# bit-for-bit reproducible.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory):
    """A small synthetic corpus (16 videos, 4 classes, 32x32, 16 frames) shared by the session."""
    from vidcache.data.synth import SynthConfig, synthesize

    root = tmp_path_factory.mktemp("corpus")
    manifest = synthesize(root, SynthConfig(videos=16, classes=4, seed=0, size=32, frames=16))
    return root / "manifest.csv", manifest
