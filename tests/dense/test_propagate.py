"""Label propagation: equal to a re-typed brute-force DINO reference; end to end on frame-token stores."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from vidcache.cache import Store
from vidcache.data.davis import read_mask
from vidcache.data.manifest import read_manifest
from vidcache.dense.propagate import (
    PropagateConfig,
    first_labels,
    labels_to_mask,
    propagate_video,
    run_propagate,
    token_frame_of,
)
from vidcache.errors import DataError
from vidcache.extract.clips import ClipExtractConfig, extract_clips


def dino_reference(tokens, first_seg, n_last, radius, topk, temp):
    """facebookresearch/dino eval_video_segmentation.py label propagation, re-typed with loops in float64."""
    n, h, w, D = tokens.shape
    feats = torch.as_tensor(tokens, dtype=torch.float64).reshape(n, h * w, D)
    mask = torch.zeros(h, w, h, w, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            for p in range(2 * radius + 1):
                for q in range(2 * radius + 1):
                    a, b = i - radius + p, j - radius + q
                    if 0 <= a < h and 0 <= b < w:
                        mask[i, j, a, b] = 1
    mask = mask.reshape(h * w, h * w)
    queue = []
    first = first_seg.double()[None]  # [1, C, h, w]
    out = [first[0]]
    for t in range(1, n):
        feat_list = [feats[0]] + [f for f, _ in queue]
        segs = [first] + [s for _, s in queue]
        tar = torch.nn.functional.normalize(feats[t], dim=1, p=2)
        src = torch.nn.functional.normalize(torch.stack(feat_list).transpose(1, 2), dim=1, p=2)  # m x D x hw
        m = len(feat_list)
        aff = torch.exp(torch.bmm(tar.unsqueeze(0).repeat(m, 1, 1), src) / temp)
        if radius > 0:
            aff *= mask.unsqueeze(0).repeat(m, 1, 1)
        aff = aff.transpose(2, 1).reshape(-1, h * w)
        tk_val, _ = torch.topk(aff, dim=0, k=topk)
        tk_val_min, _ = torch.min(tk_val, dim=0)
        aff[aff < tk_val_min] = 0
        aff = aff / torch.sum(aff, keepdim=True, axis=0)
        seg_cat = torch.cat(segs)
        C = seg_cat.shape[1]
        seg_cat = seg_cat.reshape(m, C, -1).transpose(2, 1).reshape(-1, C).T
        seg_tar = torch.mm(seg_cat, aff).reshape(1, C, h, w)
        if len(queue) == n_last:
            queue.pop(0)
        queue.append((feats[t], seg_tar))
        out.append(seg_tar[0])
    return torch.stack(out)


@pytest.mark.parametrize("n_last,radius,topk,temp", [(2, 1, 3, 0.1), (7, 0, 5, 0.7), (1, 2, 1, 0.2)])
def test_propagation_equals_bruteforce_dino(n_last, radius, topk, temp):
    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(6, 4, 5, 8)).astype(np.float32)
    ids = rng.integers(0, 3, (4, 5)).astype(np.uint8)
    first = first_labels(ids, (4, 5), 3)
    ours = propagate_video(tokens, first, n_last_frames=n_last, radius=radius, topk=topk, temperature=temp)
    ref = dino_reference(tokens, first, n_last, radius, topk, temp)
    torch.testing.assert_close(ours.double(), ref, atol=1e-5, rtol=1e-4)


def test_chunked_affinity_equals_one_chunk(monkeypatch):
    import vidcache.dense.propagate as prop

    rng = np.random.default_rng(1)
    tokens = rng.normal(size=(5, 6, 6, 4)).astype(np.float32)
    first = first_labels(rng.integers(0, 2, (6, 6)).astype(np.uint8), (6, 6), 2)
    whole = propagate_video(tokens, first, n_last_frames=3, radius=2, topk=4, temperature=0.1)
    monkeypatch.setattr(prop, "AFFINITY_BYTES", 4 * 4 * 36 * 5)  # 5 target tokens per chunk
    chunked = propagate_video(tokens, first, n_last_frames=3, radius=2, topk=4, temperature=0.1)
    torch.testing.assert_close(whole, chunked)


def test_labels_to_mask_as_dino():
    soft = torch.zeros(2, 2, 2)
    soft[1, 0, 0] = 1.0
    soft[0] = 1 - soft[1]
    # DINO: bilinear x patch, per-channel min-max, argmax, nearest resize to the original size
    up = torch.nn.functional.interpolate(soft[None], scale_factor=4, mode="bilinear", align_corners=False)[0]
    for c in range(2):
        up[c] = (up[c] - up[c].min()) / (up[c].max() - up[c].min())
    ref = np.asarray(Image.fromarray(up.argmax(0).numpy().astype(np.uint8)).resize((12, 6), Image.NEAREST))
    np.testing.assert_array_equal(labels_to_mask(soft, 4, (6, 12)), ref)
    assert labels_to_mask(soft, 4, (8, 8))[0, 0] == 1 and labels_to_mask(soft, 4, (8, 8))[7, 7] == 0


def test_first_labels_resize_nearest_and_void_as_background():
    ids = np.zeros((4, 4), np.uint8)
    ids[:2, :2] = 1
    ids[3, 3] = 255
    one = first_labels(ids, (2, 2), 2)
    np.testing.assert_array_equal(one[1].numpy(), [[1, 0], [0, 0]])
    np.testing.assert_array_equal(one.sum(0).numpy(), np.ones((2, 2)))


def test_token_frames_cover_tubelets_and_strides():
    which, n = token_frame_of(np.array([0, 4, 8]), 16, span=4)
    assert n == 12 and which.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    which, n = token_frame_of(np.array([0, 2, 4]), 5)
    assert n == 5 and which.tolist() == [0, 0, 1, 1, 2]
    which, n = token_frame_of(np.array([0]), 6, span=4)
    assert n == 4 and which.tolist() == [0, 0, 0, 0]


@pytest.fixture(scope="module")
def davis_store(tmp_path_factory, davis_patch_store):
    return davis_patch_store(tmp_path_factory.mktemp("davis"),
                             (("bear", "train", 4), ("cat", "val", 8), ("dog", "val", 6)))


def test_propagate_writes_davis_masks_and_beats_copying(davis_store, tmp_path):
    root, store = davis_store
    res = run_propagate(store, tmp_path / "out", PropagateConfig(radius=3, device="cpu"))
    assert res["num_sequences"] == 2 and res["num_objects"] == 4 and set(res["sequences"]) == {"cat", "dog"}
    for seq, n in (("cat", 8), ("dog", 6)):
        files = sorted((tmp_path / "out" / "Annotations" / seq).glob("*.png"))
        assert [f.stem for f in files] == [f"{i:05d}" for i in range(n)]
        with Image.open(files[-1]) as im:
            assert im.mode == "P" and im.size == (32, 24)
        np.testing.assert_array_equal(read_mask(files[0]), read_mask(root / "Annotations/480p" / seq / "00000.png"))
    # the red square moves 3 px a frame: copying the first mask loses it, propagation follows it
    moving = {s: res["sequences"][s]["objects"]["1"] for s in ("cat", "dog")}
    assert all(0 <= v["J"] <= 1 for v in moving.values())
    assert res["JF_mean"] > res["baseline"]["copy_first"]["JF_mean"] + 0.2
    for s in ("cat", "dog"):
        assert res["sequences"][s]["JF_mean"] > res["sequences"][s]["copy_first_JF"]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["JF_mean"] == res["JF_mean"] and saved["config_hash"] == Store.open(store).config_hash
    assert saved["selected"] == {"n_last_frames": 7, "radius": 3, "topk": 5, "temperature": 0.1}


def test_propagate_resumes_finished_sequences(davis_store, tmp_path):
    _, store = davis_store
    cfg = PropagateConfig(device="cpu")
    first = run_propagate(store, tmp_path / "o", cfg)
    seq = tmp_path / "o" / "sequences"
    stamp = (seq / "cat.json").stat().st_mtime_ns
    (seq / "dog.json").unlink()  # as if killed while "dog" was being written
    (tmp_path / "o" / "results.json").unlink()
    again = run_propagate(store, tmp_path / "o", cfg)
    assert (seq / "cat.json").stat().st_mtime_ns == stamp and (seq / "dog.json").is_file()
    assert again["JF_mean"] == first["JF_mean"]
    with pytest.raises(DataError, match="another config"):
        run_propagate(store, tmp_path / "o", PropagateConfig(preset="rvm", device="cpu"))
    rvm = run_propagate(store, tmp_path / "o", PropagateConfig(preset="rvm", device="cpu"), overwrite=True)
    assert rvm["selected"]["n_last_frames"] == 20


def test_bad_inputs_are_refused(davis_store, synth_corpus, tmp_path):
    root, store = davis_store
    plain = tmp_path / "plain.zarr"
    path, _ = synth_corpus
    extract_clips(read_manifest(path), plain, ClipExtractConfig(protocol="1x1", workers=0))
    with pytest.raises(DataError, match="--protocol frames:all --tokens full"):
        run_propagate(plain, tmp_path / "x")
    r = subprocess.run([sys.executable, "-m", "vidcache", "probe", "propagate", str(plain), "-o", str(tmp_path / "y")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "frames:all" in r.stderr
    # a mask file missing in a sequence
    victim = root / "Annotations/480p/dog/00003.png"
    victim.rename(victim.with_suffix(".bak"))
    try:
        with pytest.raises(DataError, match="mask not found"):
            run_propagate(store, tmp_path / "z", PropagateConfig(device="cpu"))
    finally:
        victim.with_suffix(".bak").rename(victim)


def test_propagation_reads_pq_codes(davis_store, tmp_path):
    from vidcache.cache.pq import quantize_store

    _, store = davis_store
    quantize_store(store, tmp_path / "pq.zarr", 24, train_tokens=20_000)
    f16 = run_propagate(store, tmp_path / "a", PropagateConfig(radius=3, device="cpu"))
    pq = run_propagate(tmp_path / "pq.zarr", tmp_path / "b", PropagateConfig(radius=3, device="cpu"))
    assert pq["config_hash"] != f16["config_hash"]
    assert abs(pq["JF_mean"] - f16["JF_mean"]) < 0.1 and pq["JF_mean"] > pq["baseline"]["copy_first"]["JF_mean"]
