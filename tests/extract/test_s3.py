"""Stores on object storage, against a live S3 server on 127.0.0.1 (moto's server mode, s3fs).

Every test here talks HTTP to a real server (the `s3` / `s3_server` fixtures in conftest.py); the
CLI runs in subprocesses that find the endpoint and credentials where users put them.
"""

import json
import os
import socket
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from vidcache.cache import DONE, Store
from vidcache.data.manifest import Manifest
from vidcache.extract.clips import ClipExtractConfig, extract_clips

FAST = dict(protocol="uniform:4", workers=0, videos_per_block=2, batch_size=4)
ARGS = ["--protocol", "uniform:4", "--workers", "0", "--videos-per-block", "2", "--batch-size", "4"]
COMPARED = ("clips/emb", "clips/box", "videos/status", "videos/error", "videos/num_frames", "videos/fps",
            "videos/label", "videos/split")


def arrays(url, **kw):
    s = Store.open(url, **kw)
    return {name: np.asarray(s.group[name][:]) for name in COMPARED}


def assert_same_store(a, b, **kw):
    A, B = arrays(a), arrays(b, **kw)
    for name in A:
        np.testing.assert_array_equal(A[name], B[name], err_msg=name)


def run_cli(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "vidcache", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def local_ref(synth_corpus, tmp_path_factory):
    """The local extraction every S3 store is compared with (with pooled tokens, for attentive probes)."""
    _, manifest = synth_corpus
    ref = tmp_path_factory.mktemp("ref") / "ref.zarr"
    extract_clips(manifest, str(ref), ClipExtractConfig(**FAST, tokens="pool:2,2,2"))
    return ref


def no_aws_env(tmp_path) -> dict:
    """Environment with no AWS_* variable and an empty home: nothing to find credentials in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    home = tmp_path / "empty-home"
    home.mkdir(exist_ok=True)
    return {**env, "HOME": str(home)}


def test_extract_to_s3_one_process_and_two_ranks_equal_local(s3, synth_corpus, local_ref, tmp_path):
    manifest_path, _ = synth_corpus
    # One process, endpoint and credentials given only as --storage-option (no AWS_* variables).
    opts = ["--storage-option", f"endpoint_url={s3.server.endpoint}",
            "--storage-option", f"key={s3.env['AWS_ACCESS_KEY_ID']}",
            "--storage-option", f"secret={s3.env['AWS_SECRET_ACCESS_KEY']}"]
    one = s3.url("one.zarr")
    r = subprocess.run([sys.executable, "-m", "vidcache", "extract", "clips", str(manifest_path), "-o", one,
                        *ARGS, "--tokens", "pool:2,2,2", *opts], capture_output=True, text=True,
                       env=no_aws_env(tmp_path))
    assert r.returncode == 0, r.stderr[-2000:]
    assert_same_store(local_ref, one)
    # The secret is never printed, nor saved anywhere in the store.
    assert s3.env["AWS_SECRET_ACCESS_KEY"] not in r.stdout + r.stderr
    for key in s3.fs.find(f"{s3.bucket}/one.zarr"):
        if key.endswith("zarr.json"):
            assert s3.env["AWS_SECRET_ACCESS_KEY"].encode() not in s3.fs.cat(key), key

    # Two ranks (torchrun, gloo), credentials from the environment.
    two = s3.url("two.zarr")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
           "-m", "vidcache", "extract", "clips", str(manifest_path), "-o", two, *ARGS, "--tokens", "pool:2,2,2",
           "--device", "cpu"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert_same_store(local_ref, two)
    np.testing.assert_array_equal(Store.open(two).group["clips/tokens"][:],
                                  Store.open(local_ref).group["clips/tokens"][:])

    # cache info / verify / export read it.
    info = run_cli("cache", "info", two, "--json")
    assert info.returncode == 0, info.stderr
    got = json.loads(info.stdout)
    assert got["counts"] == {"done": 16, "failed": 0, "pending": 0} and got["url"] == two
    assert got["bytes_on_disk"] > 0
    verify = run_cli("cache", "verify", two)
    assert verify.returncode == 0 and "ok: 16 done rows checked" in verify.stdout
    export = run_cli("cache", "export", two, "-o", tmp_path / "two.h5")
    assert export.returncode == 0, export.stderr
    with h5py.File(tmp_path / "two.h5") as f:
        np.testing.assert_array_equal(f["clips/emb"][:], Store.open(local_ref).group["clips/emb"][:])


def test_sigkill_during_store_creation_on_s3_then_rerun_equals_uninterrupted(s3, synth_corpus, local_ref,
                                                                              kill_in_creation):
    manifest_path, _ = synth_corpus
    url = s3.url("s.zarr")
    args = ["extract", "clips", manifest_path, "-o", url, *ARGS, "--tokens", "pool:2,2,2"]
    kill_in_creation(6, args)
    assert s3.fs.exists(f"{s3.bucket}/s.zarr/zarr.json")
    info = run_cli("cache", "info", url)
    assert info.returncode == 2 and "creation was interrupted" in info.stderr, info.stderr
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    assert_same_store(local_ref, url)


def test_sigkill_mid_run_on_s3_then_rerun_equals_uninterrupted(s3, synth_corpus, local_ref, kill_midway):
    manifest_path, _ = synth_corpus
    url = s3.url("s.zarr")
    args = ["extract", "clips", manifest_path, "-o", url, *ARGS, "--tokens", "pool:2,2,2"]
    done_at_kill = kill_midway(args, url, min_done=4)
    assert 0 < done_at_kill < 16, "the kill must land mid-run"
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    assert_same_store(local_ref, url)
    assert Store.open(url).verify().ok


SMALL = {"linear": dict(epochs=2, lrs=[1e-3], wds=[0.0], batch_size=8),
         "mlp": dict(epochs=2, lrs=[1e-3], wds=[0.0], batch_size=8, hidden=16),
         "attentive": dict(epochs=1, lrs=[1e-3], wds=[0.0], batch_size=8),
         "knn": dict(ks=[1, 3])}


def _comparable(res):
    """Results without timings and paths: what must not depend on where the store lives."""
    if isinstance(res, dict):
        return {k: _comparable(v) for k, v in res.items()
                if "seconds" not in k and k not in ("timings", "store", "out_dir", "output")}
    if isinstance(res, list):
        return [_comparable(v) for v in res]
    return res


def test_every_probe_and_scale_eval_read_s3_stores(s3, local_ref, tmp_path):
    from vidcache.probe import make_config, run_probe
    from vidcache.probe.run import PROBES
    from vidcache.scale.config import ScaleConfig
    from vidcache.scale.evaluate import ScaleEvalConfig, evaluate_run
    from vidcache.scale.train import train_from_store

    s3.fs.put(str(local_ref), f"{s3.bucket}/ref.zarr", recursive=True)
    url = s3.url("ref.zarr")
    assert set(SMALL) == set(PROBES)
    for name in PROBES:
        cfg = make_config(name, device="cpu", **SMALL[name])
        here = run_probe(name, str(local_ref), tmp_path / f"{name}-local", cfg)
        there = run_probe(name, url, tmp_path / f"{name}-s3", cfg)
        assert there["store"] == url
        assert _comparable(there) == _comparable(here), name
    # One probe from the CLI as well.
    r = run_cli("probe", "knn", url, "-o", tmp_path / "knn-cli", "--ks", "1,3", "--device", "cpu")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "knn-cli" / "results.json").read_text())["store"] == url

    train_from_store(str(local_ref), tmp_path / "run",
                     ScaleConfig(hidden_dim=16, depth=1, num_heads=2, head_hidden=16, proj_dim=8, clips_per_set=2,
                                 epochs=1, batch_size=8, device="cpu", checkpoint_every=100, log_every=100))
    ecfg = ScaleEvalConfig(rows=["linear", "knn", "scale_linear"], epochs=2, lrs=[1e-3], wds=[0.0], k=3,
                           device="cpu", val_fraction=0.0)
    here = evaluate_run(tmp_path / "run", str(local_ref), str(local_ref), tmp_path / "eval-local", ecfg)
    there = evaluate_run(tmp_path / "run", url, url, tmp_path / "eval-s3", ecfg)
    assert _comparable(there["rows"]) == _comparable(here["rows"]) and len(here["rows"]) == 3


def test_manifest_of_s3_video_urls_extracts_like_local_files(s3, synth_corpus, local_ref, tmp_path):
    manifest_path, manifest = synth_corpus
    urls = []
    for p in manifest.paths:
        key = f"{s3.bucket}/videos/{os.path.basename(p)}"
        s3.fs.put(str(p), key)
        urls.append(f"s3://{key}")
    remote = Manifest(urls, manifest.labels, manifest.splits, manifest.classes)
    remote.write(tmp_path / "s3-manifest.csv")
    # Two decode workers: each fetches its videos from the server to a temporary file.
    r = run_cli("extract", "clips", tmp_path / "s3-manifest.csv", "-o", tmp_path / "x.zarr",
                "--protocol", "uniform:4", "--workers", "2", "--videos-per-block", "2", "--batch-size", "4",
                "--tokens", "pool:2,2,2")
    assert r.returncode == 0, r.stderr[-2000:]
    got = Store.open(tmp_path / "x.zarr")
    assert list(got.group["videos/path"][:]) == urls
    ref = arrays(local_ref)
    for name, values in arrays(tmp_path / "x.zarr").items():
        np.testing.assert_array_equal(values, ref[name], err_msg=name)


def test_server_stopped_mid_run_ends_with_one_line_and_resumes_when_back(synth_corpus, local_ref, tmp_path,
                                                                        monkeypatch, own_s3_server):
    import s3fs

    server = own_s3_server
    env = {"AWS_ENDPOINT_URL": server.endpoint, "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
           # give up on a dead server after a few seconds instead of a minute of retries
           "AWS_MAX_ATTEMPTS": "2", "AWS_RETRY_MODE": "standard"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir("vidcache-down")
    url = "s3://vidcache-down/s.zarr"
    opts = {"endpoint_url": server.endpoint}  # a filesystem instance of its own in this process
    manifest_path, _ = synth_corpus
    args = ["extract", "clips", str(manifest_path), "-o", url, *ARGS, "--tokens", "pool:2,2,2"]
    proc = subprocess.Popen([sys.executable, "-m", "vidcache", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    done = np.zeros(16, bool)
    while time.time() < deadline and proc.poll() is None:
        try:
            done = Store.open(url, storage_options=opts).status() == DONE
        except Exception:
            pass
        if done.sum() >= 4:
            break
        time.sleep(0.05)
    assert proc.poll() is None and 4 <= done.sum() < 16, "the server must stop mid-run"
    server.stop()
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode not in (0, None)
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith(f"error: {url}: ") and "rerun the same command" in lines[0], \
        stderr[-3000:]

    server.start()
    after = Store.open(url, storage_options=opts).status() == DONE
    assert after[done].all(), "blocks finished before the server went away are kept"
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    assert_same_store(local_ref, url, storage_options=opts)


def test_credentials_and_endpoint_from_aws_files(s3, local_ref, tmp_path):
    s3.fs.put(str(local_ref), f"{s3.bucket}/ref.zarr", recursive=True)
    env = no_aws_env(tmp_path)
    aws = tmp_path / "empty-home" / ".aws"
    aws.mkdir()
    (aws / "credentials").write_text(f"[default]\naws_access_key_id = {s3.env['AWS_ACCESS_KEY_ID']}\n"
                                     f"aws_secret_access_key = {s3.env['AWS_SECRET_ACCESS_KEY']}\n")
    (aws / "config").write_text(f"[default]\nregion = us-east-1\nendpoint_url = {s3.server.endpoint}\n")
    r = subprocess.run([sys.executable, "-m", "vidcache", "cache", "info", s3.url("ref.zarr"), "--json"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["counts"]["done"] == 16
    assert s3.env["AWS_SECRET_ACCESS_KEY"] not in r.stdout + r.stderr
    # Without the files and without options: one line, no traceback.
    (aws / "config").unlink()
    (aws / "credentials").unlink()
    r = subprocess.run([sys.executable, "-m", "vidcache", "cache", "info", s3.url("ref.zarr"),
                        "--storage-option", "endpoint_url=http://127.0.0.1:9"], capture_output=True, text=True,
                       env={**env, "AWS_MAX_ATTEMPTS": "1"}, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.startswith(f"error: {s3.url('ref.zarr')}: opening the store failed")


def test_storage_option_without_a_url_is_a_clear_error(tmp_path):
    r = run_cli("cache", "info", tmp_path / "x.zarr", "--storage-option", "endpoint_url=http://x")
    assert r.returncode == 2 and "applies to fsspec URLs" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("cache", "info", "s3://b/x.zarr", "--storage-option", "endpoint_url")
    assert r.returncode == 2 and "must look like KEY=VALUE" in r.stderr
