"""`extract codes`: codes equal the codebook's own encoding; a killed run resumes to the same store."""

import subprocess
import sys

import numpy as np
import pytest

from vidcache.cache import Store
from vidcache.codec import CodecConfig, fit_codebook, select_frames
from vidcache.extract.codes import CodeExtractConfig, extract_codes
from vidcache.video.decode import open_video


@pytest.fixture(scope="module")
def codebook_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, (4096, 4 * 4 * 3), dtype=np.uint8)
    cb = fit_codebook(patches, CodecConfig(k=300, patch=4, size=32, niter=3), progress=False)
    path = tmp_path_factory.mktemp("cb") / "cb.npz"
    cb.save(path)
    return path, cb


def test_codes_equal_direct_encoding_and_store_layout(synth_corpus, codebook_file, tmp_path):
    _, manifest = synth_corpus
    path, cb = codebook_file
    summary = extract_codes(manifest, str(tmp_path / "c.zarr"), CodeExtractConfig(codebook=str(path), max_frames=10,
                                                                                  workers=0))
    assert summary.counts["done"] == 16
    store = Store.open(tmp_path / "c.zarr", kind="codes")
    frames = store.group["codes/frames"]
    assert frames.shape == (16, 10, 8, 8) and frames.dtype == np.uint16  # K = 300 > 256
    np.testing.assert_array_equal(store.group["codes/codebook"][:], cb.centroids_255())
    assert store.group["codes/codebook"].attrs["patch"] == 4
    n = np.asarray(store.group["videos/num_code_frames"][:])
    assert (n == 10).all()  # 16-frame videos, max 10 frames
    with open_video(manifest.paths[3]) as v:
        idx = select_frames(v.num_frames, v.fps, None, 10)
        expected = cb.encode_frames(v.get_frames(idx.tolist()))
    np.testing.assert_array_equal(frames[3], expected)
    assert store.verify().ok


def test_killed_codes_run_resumes_to_the_same_store(synth_corpus, codebook_file, tmp_path, kill_midway):
    manifest_path, manifest = synth_corpus
    path, _ = codebook_file
    extract_codes(manifest, str(tmp_path / "ref.zarr"), CodeExtractConfig(codebook=str(path), max_frames=12,
                                                                          workers=0, videos_per_block=2))
    args = ["extract", "codes", manifest_path, "--codebook", path, "-o", tmp_path / "c.zarr", "--max-frames", "12",
            "--workers", "0", "--videos-per-block", "2"]
    done = kill_midway(args, tmp_path / "c.zarr", min_done=2)
    assert 0 < done < 16
    r = subprocess.run([sys.executable, "-m", "vidcache", *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    a, b = Store.open(tmp_path / "ref.zarr"), Store.open(tmp_path / "c.zarr")
    for name in ("codes/frames", "videos/num_code_frames", "videos/status", "codes/codebook"):
        np.testing.assert_array_equal(a.group[name][:], b.group[name][:], err_msg=name)
