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


@pytest.fixture
def kill_after_checkpoint(tmp_path):
    """`pretrain(cfg)` in a subprocess, SIGKILLed once `cfg.out/ckpt_name` exists (either objective).

    The config travels as its class and field values; the subprocess imports this checkout.
    """
    import os
    import subprocess
    import sys
    import textwrap
    import time
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]

    def run(cfg, ckpt_name: str, timeout: float = 120) -> None:
        kind = type(cfg)
        script = tmp_path / f"killed_{kind.__name__}.py"
        script.write_text(textwrap.dedent(f"""
            import torch
            torch.set_num_threads(1)
            from {kind.__module__} import {kind.__name__}
            from vidcache.pretrain.train import pretrain
            pretrain({kind.__name__}(**{cfg.__dict__!r}))
        """))
        env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
        target = Path(cfg.out) / ckpt_name
        proc = subprocess.Popen([sys.executable, str(script)], env=env)
        deadline = time.time() + timeout
        while not target.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.01)
        proc.kill()
        proc.wait()
        assert target.exists(), f"the run ended or timed out before writing {ckpt_name}"

    return run
