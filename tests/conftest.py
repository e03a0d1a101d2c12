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


# ------------------------------------------------------------------------------------------- S3
class S3Server:
    """A live S3-compatible server on 127.0.0.1 (moto's server mode) that a test can stop and restart.

    The buckets live in this process's moto backend, so they survive a stop/start of the server.
    """

    def __init__(self):
        import logging
        import socket

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._cls = ThreadedMotoServer
        self._server = None
        self.start()

    def start(self) -> None:
        self._server = self._cls(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


def _need_s3_libs():
    pytest.importorskip("s3fs", reason="S3 tests need s3fs (pip install -e '.[test]')")
    pytest.importorskip("moto.server", reason="S3 tests need moto[server] (pip install -e '.[test]')")


@pytest.fixture(scope="session")
def s3_server():
    """One live S3 server for the session (started and stopped here)."""
    _need_s3_libs()
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture
def own_s3_server():
    """A live S3 server of the test's own (to stop and restart), stopped at the end of the test."""
    _need_s3_libs()
    server = S3Server()
    yield server
    server.stop()


S3_KEY, S3_SECRET = "vidcache-test-key", "vidcache-test-secret-7f3a9"


@pytest.fixture
def s3(s3_server, monkeypatch, tmp_path):
    """A fresh bucket on the live server; endpoint and credentials in AWS_* variables (as users set them).

    `s3.url(name)` is `s3://BUCKET/name`; `s3.fs` is an s3fs filesystem on that server; `s3.env`
    holds the variables for subprocesses (they inherit os.environ anyway).
    """
    import types
    import uuid

    import s3fs

    env = {"AWS_ENDPOINT_URL": s3_server.endpoint, "AWS_ACCESS_KEY_ID": S3_KEY,
           "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_DEFAULT_REGION": "us-east-1",
           # nothing from the developer's own ~/.aws
           "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    bucket = f"vidcache-{uuid.uuid4().hex[:12]}"
    fs.mkdir(bucket)
    return types.SimpleNamespace(bucket=bucket, url=lambda name: f"s3://{bucket}/{name}", fs=fs, env=env,
                                 server=s3_server)


# The CLI with a SIGKILL of its own process at the k-th array that store creation makes (k = 0: at
# the attribute write that finishes the creation): a kill at a known point of store creation.
KILL_IN_CREATION = """
import os, signal, sys
import zarr, zarr.core.attributes
k = int(sys.argv[1])
made = [0]
create_array, put = zarr.Group.create_array, zarr.core.attributes.Attributes.put
def counting(self, *a, **kw):
    made[0] += 1
    if made[0] == k:
        os.kill(os.getpid(), signal.SIGKILL)
    return create_array(self, *a, **kw)
def final(self, d):
    if k == 0 and "vidcache" in d:
        os.kill(os.getpid(), signal.SIGKILL)
    return put(self, d)
zarr.Group.create_array, zarr.core.attributes.Attributes.put = counting, final
from vidcache.cli import main
main(sys.argv[2:])
"""


@pytest.fixture
def kill_in_creation():
    """Run `python -m vidcache ARGS` SIGKILLed at point k of store creation (see KILL_IN_CREATION)."""
    import signal
    import subprocess
    import sys

    def run(k, args):
        r = subprocess.run([sys.executable, "-c", KILL_IN_CREATION, str(k), *map(str, args)],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
        return r

    return run
