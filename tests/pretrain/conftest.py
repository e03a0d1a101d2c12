import numpy as np
import pytest


@pytest.fixture(scope="session")
def code_store(synth_corpus, tmp_path_factory):
    """Codes of the shared synthetic corpus: 16 videos of 16 frames, 32 px, 4 px patches, K = 300."""
    from vidcache.codec import CodecConfig, fit_codebook
    from vidcache.extract.codes import CodeExtractConfig, extract_codes

    _, manifest = synth_corpus
    root = tmp_path_factory.mktemp("codes")
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, (4096, 4 * 4 * 3), dtype=np.uint8)
    cb = fit_codebook(patches, CodecConfig(k=300, patch=4, size=32, niter=3), progress=False)
    cb.save(root / "cb.npz")
    url = str(root / "codes.zarr")
    extract_codes(manifest, url, CodeExtractConfig(codebook=str(root / "cb.npz"), max_frames=16, workers=0))
    return url, cb
