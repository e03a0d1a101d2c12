"""PQ token codes: encode/decode as faiss, a quantized store read back decoded by every reader."""

import numpy as np
import pytest

from vidcache.cache import Store
from vidcache.cache.pq import decode, encode, quantize_store, train_codebook
from vidcache.data.manifest import read_manifest
from vidcache.errors import DataError
from vidcache.extract.clips import ClipExtractConfig, extract_clips


def test_encode_decode_match_faiss():
    import faiss

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 16)).astype(np.float32)
    cb = train_codebook(x, 4, seed=1)
    assert cb.shape == (4, 256, 4)
    pq = faiss.ProductQuantizer(16, 4, 8)
    faiss.copy_array_to_vector(cb.reshape(-1), pq.centroids)
    codes = encode(x[:300], cb)
    np.testing.assert_array_equal(codes, pq.compute_codes(x[:300]))
    np.testing.assert_allclose(decode(codes, cb, np.float32), pq.decode(codes), atol=1e-6)
    # decoding is the centroid of each sub-vector: error well below the data's spread
    err = np.abs(decode(codes, cb, np.float32) - x[:300]).mean()
    assert err < 0.5 * np.abs(x).mean()


def test_encode_keeps_leading_shape():
    cb = np.arange(2 * 256 * 3, dtype=np.float32).reshape(2, 256, 3)
    x = cb[[0, 1], [[5, 7]]].reshape(1, 1, 6)  # exactly centroid 5 then centroid 7
    np.testing.assert_array_equal(encode(x, cb), [[[5, 7]]])
    assert decode(encode(x, cb), cb).shape == (1, 1, 6)


def test_quantized_clip_store_reads_back_decoded(synth_corpus, tmp_path):
    path, manifest = synth_corpus
    src = tmp_path / "f16.zarr"
    extract_clips(read_manifest(path), src, ClipExtractConfig(protocol="uniform:2", tokens="full", workers=0))
    q = quantize_store(src, tmp_path / "pq.zarr", 12, train_tokens=5000)
    a, b = Store.open(src), Store.open(tmp_path / "pq.zarr")
    assert b.group["clips/tokens"].dtype == np.uint8 and b.group["clips/tokens"].shape[-1] == 12
    assert b.group["clips/token_codebook"].shape == (12, 256, 8)
    assert b.config_hash != a.config_hash and b.attrs["pq"]["subvectors"] == 12
    la, lb = a.load(("emb", "tokens"), split="val"), b.load(("emb", "tokens"), split="val")
    assert lb["tokens"].dtype == np.float16 and lb["tokens"].shape == la["tokens"].shape
    np.testing.assert_array_equal(la["emb"], lb["emb"])
    x, y = la["tokens"].astype(np.float32), lb["tokens"].astype(np.float32)
    rel = np.linalg.norm(x - y) / np.linalg.norm(x - x.mean())
    assert rel < 0.8  # 16x fewer bytes per token, most of the variance kept
    raw = b.read_rows("clips/tokens", np.array([0]), decode=False)
    assert raw.dtype == np.uint8
    again = quantize_store(src, tmp_path / "pq.zarr", 12, train_tokens=5000)  # resumes: nothing pending
    assert again.counts() == q.counts() and not again.pending_blocks()
    with pytest.raises(DataError, match="divide"):
        quantize_store(src, tmp_path / "x.zarr", 7)


def test_store_without_tokens_is_refused(synth_corpus, tmp_path):
    path, _ = synth_corpus
    extract_clips(read_manifest(path), tmp_path / "e.zarr", ClipExtractConfig(protocol="1x1", workers=0))
    with pytest.raises(DataError, match="no tokens"):
        quantize_store(tmp_path / "e.zarr", tmp_path / "q.zarr", 12)
