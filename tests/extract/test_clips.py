"""End-to-end extraction: resume after SIGKILL, bad files, hung and crashing decoders, torchrun."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vidcache.cache import DONE, FAILED, Store
from vidcache.data.manifest import Manifest
from vidcache.errors import StoreError
from vidcache.extract import clips as clips_mod
from vidcache.extract.clips import ClipExtractConfig, extract_clips
from vidcache.extract.pool import WorkerPool

FAST = dict(protocol="uniform:2", workers=0, videos_per_block=2, batch_size=4)


def arrays(url):
    s = Store.open(url)
    return {name: np.asarray(s.group[name][:]) for name in
            ("clips/emb", "clips/box", "videos/status", "videos/error", "videos/num_frames")}


def assert_same_store(a, b):
    A, B = arrays(a), arrays(b)
    for name in A:
        np.testing.assert_array_equal(A[name], B[name], err_msg=name)


def run_cli(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "vidcache", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, **kw)


def test_extract_writes_embeddings_boxes_and_tokens(synth_corpus, tmp_path):
    _, manifest = synth_corpus
    cfg = ClipExtractConfig(protocol="2x3", tokens="pool:2,2,2", workers=0, batch_size=5)
    summary = extract_clips(manifest, str(tmp_path / "s.zarr"), cfg)
    assert summary.counts == {"done": 16, "failed": 0, "pending": 0}
    store = Store.open(tmp_path / "s.zarr")
    out = store.load(("emb", "box", "tokens"))
    assert out["emb"].shape == (16, 6, 96) and out["tokens"].shape == (16, 6, 8, 96)
    assert np.isfinite(out["emb"].astype(np.float32)).all() and np.abs(out["emb"]).sum(-1).min() > 0
    # 2x3 on 32x32 frames, 16 frames, tiny = 8 frames at stride 2 (span 15): windows [0, 15) and [1, 16)
    np.testing.assert_allclose(out["box"][0, :, 2], [0, 0, 0, 1 / 16, 1 / 16, 1 / 16])
    np.testing.assert_allclose(out["box"][0, :, 5], [15 / 16] * 3 + [1.0] * 3)
    # pool:2,2,2 tokens are block averages of the full token grid.
    full_cfg = ClipExtractConfig(protocol="2x3", tokens="full", workers=0, batch_size=5)
    extract_clips(manifest, str(tmp_path / "full.zarr"), full_cfg)
    full = Store.open(tmp_path / "full.zarr")
    t, h, w = full.attrs["token_grid"]
    tok = full.load(("tokens",))["tokens"].astype(np.float32).reshape(16, 6, t, h, w, 96)
    pooled = tok.reshape(16, 6, 2, t // 2, 2, h // 2, 2, w // 2, 96).mean((3, 5, 7)).reshape(16, 6, 8, 96)
    np.testing.assert_allclose(out["tokens"].astype(np.float32), pooled, atol=3e-3, rtol=3e-3)
    assert store.attrs["flops_per_clip"] > 0 and store.verify().ok
    assert len(store.config["backbone"]["weights"]) == 64
    # Batch size and worker count do not change the data, so the same store can be resumed with others.
    again = ClipExtractConfig(protocol="2x3", tokens="pool:2,2,2", workers=2, batch_size=7)
    assert extract_clips(manifest, str(tmp_path / "s.zarr"), again).videos == 0


def test_two_workers_equal_inline(synth_corpus, tmp_path):
    _, manifest = synth_corpus
    extract_clips(manifest, str(tmp_path / "a.zarr"), ClipExtractConfig(**FAST))
    extract_clips(manifest, str(tmp_path / "b.zarr"), ClipExtractConfig(**{**FAST, "workers": 2}))
    assert_same_store(tmp_path / "a.zarr", tmp_path / "b.zarr")


def test_short_video_repeats_frames_and_says_so_in_its_box(tmp_path):
    from vidcache.data.synth import write_mp4

    video = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    path = write_mp4(tmp_path / "short.mp4", video, fps=8)
    m = Manifest([str(path)], [0], ["train"], ["a"])
    summary = extract_clips(m, str(tmp_path / "s.zarr"), ClipExtractConfig(protocol="1x1", workers=0))
    assert summary.counts["done"] == 1
    box = Store.open(tmp_path / "s.zarr").load(("box",))["box"][0, 0]
    np.testing.assert_allclose(box, [0, 0, 0, 1, 1, 1])


def test_bad_files_are_failed_with_reasons_and_the_run_goes_on(synth_corpus, tmp_path):
    _, good = synth_corpus
    (tmp_path / "empty.mp4").write_bytes(b"")
    data = Path(good.paths[0]).read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 20)
    bad = ["empty.mp4", "truncated.mp4", "text.mp4", "missing.mp4"]
    paths = good.paths[:4] + [str(tmp_path / b) for b in bad]
    m = Manifest(paths, [0] * 8, ["train"] * 8, ["a"])
    m.write(tmp_path / "m.csv")
    r = run_cli("extract", "clips", tmp_path / "m.csv", "-o", tmp_path / "s.zarr", "--protocol", "1x1",
                "--workers", "1")
    assert r.returncode == 3, r.stderr
    store = Store.open(tmp_path / "s.zarr")
    st = store.status()
    assert st.tolist() == [DONE] * 4 + [FAILED] * 4
    errors = dict(zip([Path(p).name for p in paths], store.videos()["error"]))
    assert "empty" in errors["empty.mp4"].lower()
    assert "not a video" in errors["text.mp4"].lower() or "not_video" in errors["text.mp4"]
    assert "missing" in errors["missing.mp4"].lower() or "not found" in errors["missing.mp4"].lower()
    assert errors["truncated.mp4"]
    assert store.verify().ok
    info = run_cli("cache", "info", tmp_path / "s.zarr")
    assert info.returncode == 0 and "missing.mp4" in info.stdout and "failed videos" in info.stdout


def _slow_or_crashing_worker(original):
    def call(self, row, path):
        if "hang" in path:
            time.sleep(60)
        if "crash" in path:
            os.kill(os.getpid(), signal.SIGSEGV)
        return original(self, row, path)
    return call


def test_hung_and_crashing_decoders_are_failed_and_the_run_goes_on(synth_corpus, tmp_path, monkeypatch):
    _, good = synth_corpus
    monkeypatch.setattr(clips_mod.ClipWorker, "__call__", _slow_or_crashing_worker(clips_mod.ClipWorker.__call__))
    paths = [good.paths[0], "/videos/hang.mp4", good.paths[1], "/videos/crash.mp4", good.paths[2]]
    m = Manifest(paths, [0] * 5, ["train"] * 5, ["a"])
    cfg = ClipExtractConfig(protocol="1x1", workers=2, decode_timeout=3, videos_per_block=8)
    t = time.perf_counter()
    summary = extract_clips(m, str(tmp_path / "s.zarr"), cfg, start_method="fork")
    assert time.perf_counter() - t < 40
    store = Store.open(tmp_path / "s.zarr")
    assert store.status().tolist() == [DONE, FAILED, DONE, FAILED, DONE]
    errors = store.videos()["error"]
    assert "timed out after 3 s" in errors[1]
    assert "worker died" in errors[3] and "-11" in errors[3]
    assert summary.restarts == 2


def test_pool_returns_results_in_order_despite_failures():
    def fn(x):
        if x == 2:
            raise ValueError("bad input 2")
        time.sleep(0.05 * (5 - x))
        return x * 10

    with WorkerPool(fn, workers=2, timeout_s=10, start_method="fork") as pool:
        res = list(pool.imap((i, (i,)) for i in range(5)))
    assert [r.key for r in res] == [0, 1, 2, 3, 4]
    assert [r.value for r in res if r.ok] == [0, 10, 30, 40]
    assert res[2].error == "ValueError: bad input 2"


def test_rerun_with_another_backbone_or_protocol_is_refused(synth_corpus, tmp_path):
    manifest_path, manifest = synth_corpus
    extract_clips(manifest, str(tmp_path / "s.zarr"), ClipExtractConfig(**FAST))
    with pytest.raises(StoreError, match=r"extract.protocol \('uniform:2' != '1x1'\)"):
        extract_clips(manifest, str(tmp_path / "s.zarr"), ClipExtractConfig(**{**FAST, "protocol": "1x1"}))
    r = run_cli("extract", "clips", manifest_path, "-o", tmp_path / "s.zarr", "--protocol", "uniform:2",
                "--backbone", "tiny_frame", "--workers", "0")
    assert r.returncode == 2
    assert "extract.backbone ('tiny' != 'tiny_frame')" in r.stderr
    assert "backbone.weights" in r.stderr and "Traceback" not in r.stderr


def test_sigkill_then_resume_equals_uninterrupted_run(synth_corpus, tmp_path, kill_midway):
    manifest_path, manifest = synth_corpus
    ref = tmp_path / "ref.zarr"
    extract_clips(manifest, str(ref), ClipExtractConfig(protocol="uniform:2", workers=0, videos_per_block=2,
                                                        batch_size=3))
    args = ["extract", "clips", manifest_path, "-o", tmp_path / "s.zarr", "--protocol", "uniform:2",
            "--workers", "0", "--videos-per-block", "2", "--batch-size", "3"]
    done_at_kill = kill_midway(args, tmp_path / "s.zarr", min_done=4)
    assert 0 < done_at_kill < 16, "the kill must land mid-run"
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert_same_store(ref, tmp_path / "s.zarr")
    assert Store.open(tmp_path / "s.zarr").verify().ok


def test_torchrun_two_ranks_equal_one_process(synth_corpus, tmp_path):
    manifest_path, manifest = synth_corpus
    extract_clips(manifest, str(tmp_path / "one.zarr"), ClipExtractConfig(**FAST))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533",
           "-m", "vidcache", "extract", "clips", str(manifest_path), "-o", str(tmp_path / "two.zarr"),
           "--protocol", "uniform:2", "--workers", "0", "--videos-per-block", "2", "--batch-size", "4",
           "--device", "cpu"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    assert_same_store(tmp_path / "one.zarr", tmp_path / "two.zarr")



@pytest.mark.parametrize("k", [6, 0])
def test_sigkill_during_store_creation_then_rerun_equals_uninterrupted(synth_corpus, tmp_path, k, kill_in_creation):
    manifest_path, manifest = synth_corpus
    ref = tmp_path / "ref.zarr"
    extract_clips(manifest, str(ref), ClipExtractConfig(**FAST))
    args = ["extract", "clips", str(manifest_path), "-o", str(tmp_path / "s.zarr"), "--protocol", "uniform:2",
            "--workers", "0", "--videos-per-block", "2", "--batch-size", "4"]
    kill_in_creation(k, args)
    assert (tmp_path / "s.zarr" / "zarr.json").is_file()
    info = run_cli("cache", "info", tmp_path / "s.zarr")
    assert info.returncode == 2 and "creation was interrupted" in info.stderr and "Traceback" not in info.stderr
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert_same_store(ref, tmp_path / "s.zarr")
    assert Store.open(tmp_path / "s.zarr").verify().ok


_CTRL_C_SCRIPT = """
import sys, time
from vidcache.extract.pool import WorkerPool

def slow(x):
    time.sleep(30)
    return x

try:
    with WorkerPool(slow, workers=2, timeout_s=60, start_method="fork") as pool:
        print("started", flush=True)
        list(pool.imap((i, (i,)) for i in range(4)))
except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    sys.exit(130)
"""


def test_ctrl_c_reaches_the_parent_only_workers_stay_silent(tmp_path):
    """Ctrl-C signals the whole foreground process group: the workers must not print tracebacks."""
    import os
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", _CTRL_C_SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "started"
    time.sleep(1.0)  # the workers are inside their first task
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.strip() == "interrupted", err
