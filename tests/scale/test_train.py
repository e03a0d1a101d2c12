"""SCALE training: bit-for-bit reproducibility, resume, checkpoints, stores."""

import json

import numpy as np
import pytest
import torch

from vidcache.errors import StoreError
from vidcache.scale.config import ScaleConfig
from vidcache.scale.train import MODEL_FILE, STATE_FILE, load_run, train_from_store, train_scale


def _data(V=24, C=8, D=12, seed=0):
    rng = np.random.default_rng(seed)
    video = rng.normal(size=(V, 1, D))
    t = rng.random((V, C, 1))
    emb = (video + 2 * t * rng.normal(size=(V, 1, D)) + 0.2 * rng.normal(size=(V, C, D))).astype(np.float16)
    box = np.concatenate([np.zeros((V, C, 2)), t, np.ones((V, C, 2)), t + 0.1], -1).astype(np.float32)
    return emb, box


def _cfg(**kw):
    base = dict(hidden_dim=16, depth=2, num_heads=2, head_hidden=16, pred_head_hidden=16,
                target_head_hidden=16, proj_dim=8, clips_per_set=4,
                epochs=4, batch_size=8, lr=2e-3, log_every=2, checkpoint_every=2, device="cpu")
    base.update(kw)
    return ScaleConfig(**base)


def _equal_states(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_seed_makes_training_bit_for_bit_reproducible(tmp_path):
    emb, box = _data()
    a = train_scale(emb, box, _cfg(), tmp_path / "a").state_dict()
    b = train_scale(emb, box, _cfg(), tmp_path / "b").state_dict()
    c = train_scale(emb, box, _cfg(seed=1), tmp_path / "c").state_dict()
    assert _equal_states(a, b)
    assert not _equal_states(a, c)
    la = (tmp_path / "a" / "metrics.jsonl").read_text()
    epochs = [json.loads(x) for x in la.splitlines() if "samples_per_s" in x]
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4]


def test_training_lowers_the_loss(tmp_path):
    emb, box = _data(V=48)
    train_scale(emb, box, _cfg(epochs=12, batch_size=16, hidden_dim=32, pred_head_hidden=64, target_head_hidden=64),
                tmp_path / "r")
    epochs = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
              if "samples_per_s" in x]
    assert epochs[-1]["loss"] < 0.65 * epochs[0]["loss"]  # 4.03 -> 2.37
    assert epochs[-1]["set_acc"] > epochs[0]["set_acc"] + 0.3  # two sets of one video find each other


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    emb, box = _data()
    full = train_scale(emb, box, _cfg(), tmp_path / "full").state_dict()

    def crash(epoch, metrics):
        if epoch == 3:  # after the epoch-2 checkpoint, before the next
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_scale(emb, box, _cfg(), tmp_path / "cut", progress=crash)
    assert torch.load(tmp_path / "cut" / STATE_FILE, weights_only=True)["epoch"] == 2
    resumed = train_scale(emb, box, _cfg(), tmp_path / "cut").state_dict()
    assert _equal_states(full, resumed)
    lines = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines if "samples_per_s" in x] == [1, 2, 3, 4]


def test_other_config_in_the_same_folder_is_refused(tmp_path):
    emb, box = _data()
    train_scale(emb, box, _cfg(epochs=1), tmp_path / "r")
    with pytest.raises(StoreError, match="mask_ratio"):
        train_scale(emb, box, _cfg(epochs=1, mask_ratio=0.5), tmp_path / "r")
    train_scale(emb, box, _cfg(epochs=1, mask_ratio=0.5), tmp_path / "r", overwrite=True)


def test_checkpoints_load_with_weights_only(tmp_path):
    emb, box = _data()
    model = train_scale(emb, box, _cfg(epochs=1), tmp_path / "r")
    sd = torch.load(tmp_path / "r" / MODEL_FILE, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    loaded, cfg, info = load_run(tmp_path / "r")
    assert cfg.hidden_dim == 16 and info["in_dim"] == 12
    model.eval()
    x, b = torch.from_numpy(emb[:3]), torch.from_numpy(box[:3])
    with torch.no_grad():
        torch.testing.assert_close(loaded.predictor(x, b)[1], model.predictor(x, b)[1])
    with pytest.raises(StoreError, match="scale train"):
        load_run(tmp_path / "missing")


def test_train_from_store(tmp_path):
    Store = pytest.importorskip("vidcache.cache.store").Store
    from vidcache.cache.store import ArraySpec
    from vidcache.data.manifest import Manifest

    emb, box = _data(V=16)
    splits = ["train"] * 12 + ["val"] * 4
    man = Manifest(paths=[f"v{i}.mp4" for i in range(16)], labels=np.arange(16) % 2, splits=splits,
                   classes=["a", "b"])
    st = Store.create(tmp_path / "s.zarr", "clips", man, {"protocol": "random:8:0"},
                      {"clips/emb": ArraySpec((8, 12), "float16"), "clips/box": ArraySpec((8, 6), "float32")},
                      videos_per_block=8)
    status = np.ones(8, np.int8)
    status[3] = 2  # a failed video is left out
    st.write_block(0, {"clips/emb": emb[:8], "clips/box": box[:8]}, status,
                   errors=["" if s == 1 else "corrupt" for s in status])
    st.write_block(1, {"clips/emb": emb[8:], "clips/box": box[8:]}, np.ones(8, np.int8))
    train_from_store(tmp_path / "s.zarr", tmp_path / "run", _cfg(epochs=1))
    info = json.loads((tmp_path / "run" / "config.json").read_text())
    assert info["num_videos"] == 11  # 12 train videos, one failed
    assert info["source"]["config_hash"] == st.config_hash and info["source"]["classes"] == ["a", "b"]


def test_a_refused_run_writes_nothing_and_never_blocks_the_corrected_one(tmp_path):
    """Sets the store cannot fill are refused before the run folder is touched; a folder left with
    a config but no checkpoint (by an earlier version) holds no work and does not block either."""
    from vidcache.errors import DataError

    emb, box = _data(C=4)
    with pytest.raises(DataError, match="2K = 8 distinct clips"):
        train_scale(emb, box, _cfg(clips_per_set=4), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps({"run_hash": "another", "scale": {}}))
    (tmp_path / "run" / "metrics.jsonl").write_text('{"epoch": 1, "loss": 1.0}\n')
    train_scale(emb, box, _cfg(clips_per_set=2, epochs=1), tmp_path / "run")
    assert (tmp_path / "run" / MODEL_FILE).exists()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["scale"]["clips_per_set"] == 2
