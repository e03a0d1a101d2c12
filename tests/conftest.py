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


def _done_count(url):
    from vidcache.cache import DONE, Store

    try:
        return int((Store.open(url).status() == DONE).sum())
    except Exception:
        return 0


@pytest.fixture
def kill_midway():
    """Run `python -m vidcache ARGS` and SIGKILL it once `store` has at least `min_done` done videos.

    Returns the number of done videos at the kill, so tests can check the kill landed mid-run.
    """
    import signal
    import subprocess
    import sys
    import time

    def run(args, store, min_done, timeout=120):
        proc = subprocess.Popen([sys.executable, "-m", "vidcache", *map(str, args)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + timeout
        while _done_count(store) < min_done and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return _done_count(store)

    return run
