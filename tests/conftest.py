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


def _make_davis(root, seqs=(("bear", "train", 5), ("cat", "val", 4)), size=(24, 32)):
    """A tiny DAVIS-2017 tree: a red square moving right (id 1) and a still blue one (id 2) on grey."""
    from PIL import Image

    from vidcache.data.davis import write_mask

    h, w = size
    for seq, split, n in seqs:
        (root / "JPEGImages/480p" / seq).mkdir(parents=True)
        for f in range(n):
            img = np.full((h, w, 3), 90, np.uint8)
            ids = np.zeros((h, w), np.uint8)
            x0 = 2 + 3 * f
            img[6:14, x0:x0 + 8] = (250, 30, 30)
            ids[6:14, x0:x0 + 8] = 1
            ids[18:22, 2:6] = 2
            img[18:22, 2:6] = (30, 30, 250)
            Image.fromarray(img).save(root / "JPEGImages/480p" / seq / f"{f:05d}.jpg", quality=95)
            write_mask(root / "Annotations/480p" / seq / f"{f:05d}.png", ids)
    (root / "ImageSets/2017").mkdir(parents=True)
    for split in ("train", "val"):
        (root / "ImageSets/2017" / f"{split}.txt").write_text(
            "".join(f"{s}\n" for s, sp, _ in seqs if sp == split))
    return root


@pytest.fixture(scope="session")
def make_davis():
    """Build a tiny DAVIS-2017 tree: `make_davis(root, seqs=((name, split, frames), ...), size=(h, w))`."""
    return _make_davis
