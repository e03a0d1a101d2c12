"""SCALE evaluation: derived features, the set classifier head, the table, runs on stores."""

import json

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from vidcache.errors import ConfigError, DataError
from vidcache.probe.data import ProbeData
from vidcache.scale.evaluate import (
    ROWS,
    ScaleEvalConfig,
    SetClassifier,
    evaluate_features,
    evaluate_run,
    results_table,
    scale_features,
)
from vidcache.scale.model import SCALEPredictor


def rotation_data(n, seed, C=6, D=6):
    """Two classes that differ only in the direction a point turns on a circle over time.

    Every clip alone is a uniform point on the circle in both classes (random phase per video),
    so a per-clip head is at chance; the order of clips in time (their boxes) gives the class.
    """
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    t = rng.random((n, C))
    phase = rng.random((n, 1))
    sign = np.where(y == 0, 1.0, -1.0)[:, None]
    ang = 2 * np.pi * (phase + sign * 0.4 * t)
    emb = 0.1 * rng.standard_normal((n, C, D))
    emb[..., 0] += 2 * np.cos(ang)
    emb[..., 1] += 2 * np.sin(ang)
    box = np.zeros((n, C, 6), np.float32)
    box[..., 2], box[..., 5] = t, t + 0.05
    box[..., 3:5] = 1.0
    return ProbeData(x=emb.astype(np.float16), y=y, extras={"box": box})


def _cfg(**kw):
    base = dict(device="cpu", epochs=10, lrs=[1e-2], wds=[1e-4], mlp_hidden=16, ft_epochs=20,
                ft_lrs=[3e-3], ft_wds=[1e-4], ft_batch_size=32, k=5)
    base.update(kw)
    return ScaleEvalConfig(**base)


@pytest.mark.parametrize("features", ["x_set", "clips_cls"])
def test_set_classifier_returns_log_of_mean_clip_softmax(features):
    torch.manual_seed(0)
    p = SCALEPredictor(5, 8, 1, 2).eval()
    p.set_stats(torch.full((5,), 0.5), torch.full((5,), 2.0))
    head = SetClassifier(p, 3, features).eval()
    nn_init = torch.nn.init
    nn_init.normal_(head.fc.weight)
    batch = {"x": torch.randn(4, 6, 5), "box": torch.rand(4, 6, 6)}
    out = head(batch)
    clips, cls = head.predictor(batch["x"], batch["box"])
    # official LinearOnTop: [x_i, SET] per clip, x the standardised clip feature; thesis: [C^_i, CLS]
    first = (batch["x"] - 0.5) / 2.0 if features == "x_set" else clips
    assert head.fc.in_features == (5 if features == "x_set" else 8) + 8
    per_clip = head.fc(torch.cat([first, cls[:, None].expand(-1, 6, -1)], -1)).softmax(-1)
    assert_close(out.exp(), per_clip.mean(1))
    assert_close(out.softmax(-1), per_clip.mean(1))
    assert "predictor.mask_token" not in dict(head.named_parameters())


def test_scale_features_match_the_predictor():
    torch.manual_seed(0)
    p = SCALEPredictor(6, 8, 2, 2).eval()
    d = rotation_data(10, 0)
    x, clips, cls = scale_features(p, d.x, d.extras["box"], batch_size=3)
    with torch.no_grad():
        c, t = p(torch.from_numpy(d.x), torch.from_numpy(d.extras["box"]))
    assert x.shape == (10, 6, 6) and clips.shape == (10, 6, 8) and cls.shape == (10, 8)
    assert_close(torch.from_numpy(x), torch.from_numpy(d.x).float())  # identity statistics
    assert_close(torch.from_numpy(clips), c)
    assert_close(torch.from_numpy(cls), t)


def test_table_transformer_sees_motion_that_linear_cannot(tmp_path):
    data = {"train": rotation_data(96, 0), "val": rotation_data(40, 1), "test": rotation_data(60, 2)}
    torch.manual_seed(1)  # not the probes' seed: SCALE_ft starts from other weights than Transformer
    p = SCALEPredictor(6, 16, 2, 2)
    seen = []
    res = evaluate_features(p, data, _cfg(), tmp_path, progress=lambda row, r: seen.append(row))
    assert seen == list(ROWS) and set(res) == set(ROWS)
    acc = {r: res[r]["test"]["top1"] for r in ROWS}
    assert acc["linear"] < 70 and acc["mlp"] < 70  # a single clip carries no label
    assert acc["transformer"] > 78  # clips + boxes do (83 with [x_i, SET] features)
    assert acc["scale_ft"] > acc["linear"] + 15
    for r in ROWS:
        assert (tmp_path / r / "results.json").exists()
    assert (tmp_path / "scale_ft" / "head.safetensors").exists()


def test_eval_config_reports_every_problem():
    with pytest.raises(ConfigError) as e:
        from vidcache.config import check
        check(ScaleEvalConfig(rows=["nope"], k=0, ft_lrs=[], device="tpu"))
    for part in ("rows", "k must", "ft_lrs", "device"):
        assert part in str(e.value)


def _store(path, data: dict, classes):
    from vidcache.cache.store import ArraySpec, Store
    from vidcache.data.manifest import Manifest

    splits = [s for s, d in data.items() for _ in range(len(d))]
    emb = np.concatenate([d.x for d in data.values()])
    box = np.concatenate([d.extras["box"] for d in data.values()])
    y = np.concatenate([d.y for d in data.values()])
    V, C, D = emb.shape
    man = Manifest(paths=[f"v{i}.mp4" for i in range(V)], labels=y, splits=splits, classes=classes)
    st = Store.create(path, "clips", man, {"protocol": f"uniform:{C}"},
                      {"clips/emb": ArraySpec((C, D), "float16"), "clips/box": ArraySpec((C, 6), "float32")},
                      videos_per_block=V)
    st.write_block(0, {"clips/emb": emb, "clips/box": box}, np.ones(V, np.int8))
    return st


def test_evaluate_run_on_stores(tmp_path):
    pytest.importorskip("vidcache.cache.store")
    from vidcache.scale.config import ScaleConfig
    from vidcache.scale.train import train_from_store

    train_store = _store(tmp_path / "train.zarr", {"train": rotation_data(48, 0, C=8)}, ["ccw", "cw"])
    eval_store = _store(tmp_path / "eval.zarr", {"train": rotation_data(40, 3), "test": rotation_data(20, 4)},
                        ["ccw", "cw"])
    train_from_store(train_store.url, tmp_path / "run",
                     ScaleConfig(hidden_dim=16, num_heads=2, head_hidden=16, pred_head_hidden=16,
                                 target_head_hidden=16, proj_dim=8, clips_per_set=4,
                                 epochs=2, batch_size=16, device="cpu"))
    cfg = _cfg(rows=["linear", "scale_knn", "scale_ft"], ft_epochs=2)
    # No store has a val split: with val_fraction 0 that is an error, never a silent use of test.
    with pytest.raises(DataError, match="val"):
        evaluate_run(tmp_path / "run", eval_store.url, eval_store.url, cfg=_cfg(val_fraction=0.0))
    summary = evaluate_run(tmp_path / "run", eval_store.url, eval_store.url, cfg=cfg)
    out = tmp_path / "run" / "eval"
    saved = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in saved["table"]] == ["Linear", "SCALE_kNN", "SCALE_ft"]
    assert saved["num_videos"] == {"train": 36, "val": 4, "test": 20}
    assert saved["where"]["val"] == "0.1 of train"
    assert saved["eval_config_hash"] == eval_store.config_hash
    assert saved["loss_form"] == "official"
    assert json.loads((tmp_path / "run" / "config.json").read_text())["scale"]["loss_form"] == "official"
    assert summary["rows"]["scale_knn"]["selected"]["k"] == 5
    from rich.console import Console
    console = Console(record=True, width=120)
    console.print(results_table(summary))
    text = console.export_text()
    assert "SCALE_ft" in text and "Linear" in text and "official form" in text
    # Embeddings of another width are refused with a clear message.
    other = _store(tmp_path / "other.zarr", {"train": rotation_data(20, 5, D=4), "test": rotation_data(10, 6, D=4)},
                   ["ccw", "cw"])
    with pytest.raises(DataError, match="same backbone"):
        evaluate_run(tmp_path / "run", other.url, other.url, cfg=cfg)


def test_official_knn_and_linear_features(tmp_path):
    # Separius/SCALE src/eval.py: LinearOnTop(no_logits) gives [x_i, SET] per clip; knn() takes the mean over
    # clips, subtracts the mean over videos and l2-normalises. Re-typed here in float64 (train mean for all).
    from vidcache.scale.evaluate import _centre_knn, _derive

    torch.manual_seed(0)
    p = SCALEPredictor(6, 8, 1, 2).eval()
    p.set_stats(torch.full((6,), 0.1), torch.full((6,), 3.0))
    data = {"train": rotation_data(12, 0), "test": rotation_data(7, 1)}
    views = {s: _derive(d, p, "cpu", "official") for s, d in data.items()}
    _centre_knn(views)
    ref = {}
    for s, d in data.items():
        with torch.no_grad():
            _, cls = p(torch.from_numpy(d.x), torch.from_numpy(d.extras["box"]))
        x = (d.x.astype(np.float64) - 0.1) / 3.0
        x_set = np.concatenate([x, np.repeat(cls.double().numpy()[:, None], 6, 1)], -1)
        np.testing.assert_allclose(views[s]["scale_linear"].x, x_set, rtol=1e-5, atol=1e-5)
        ref[s] = {"knn": x.mean(1), "scale_knn": x_set.mean(1)}
    for row in ("knn", "scale_knn"):
        mean = ref["train"][row].mean(0)
        for s in data:
            want = ref[s][row] - mean
            want /= np.linalg.norm(want, axis=1, keepdims=True)
            np.testing.assert_allclose(views[s][row].x[:, 0], want, rtol=1e-5, atol=1e-5)
    # Thesis reading: CLS alone for SCALE_kNN, [C^_i, CLS] for SCALE_linear.
    thesis = _derive(data["test"], p, "cpu", "thesis")
    assert thesis["scale_knn"].x.shape == (7, 1, 8) and thesis["scale_linear"].x.shape == (7, 6, 16)


def test_cli_scale_eval_prints_the_loss_form(tmp_path, capsys):
    from typer.testing import CliRunner

    from vidcache.cli import app

    store = _store(tmp_path / "s.zarr", {"train": rotation_data(24, 0, C=8), "test": rotation_data(10, 1, C=8)},
                   ["ccw", "cw"])
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["scale", "train", store.url, "-o", str(run), "--loss-form", "thesis",
                                 "--epochs", "1", "--batch-size", "8", "--hidden-dim", "16", "--num-heads", "2",
                                 "--head-hidden", "16", "--clips-per-set", "4", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert json.loads((run / "config.json").read_text())["scale"]["loss_form"] == "thesis"
    r = CliRunner().invoke(app, ["scale", "eval", str(run), "--train-store", store.url, "--eval-store", store.url,
                                 "--rows", "linear", "--rows", "scale_knn", "--epochs", "1", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "trained with the thesis loss form" in r.output
    from vidcache.cli import main

    with pytest.raises(SystemExit) as e:
        main(["scale", "train", store.url, "-o", str(tmp_path / "bad"), "--loss-form", "paper"])
    assert e.value.code == 2 and "loss_form must be one of official, thesis" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def _extraction(backbone="tiny", weights="w0", protocol="uniform:8", crop_fraction=1.0):
    return {"extract": {"backbone": backbone, "protocol": protocol, "tokens": "none", "crop_fraction": crop_fraction},
            "backbone": {"name": backbone, "weights": weights}, "clip_len": 8, "store_dtype": "float16"}


def _store_with(path, data, classes, config):
    st = _store(path, data, classes)
    st = type(st).open(st.url, mode="r+")
    st.group.attrs.update({"config": config, "config_hashed": config})
    return type(st).open(st.url)


def test_evaluate_run_refuses_stores_of_another_dataset_or_extraction(tmp_path):
    """Train and eval stores (and the run's own training store) must hold one dataset's classes and
    one extraction's features; protocol and tokens may differ. --allow-mismatch evaluates anyway."""
    from vidcache.errors import StoreError
    from vidcache.scale.config import ScaleConfig
    from vidcache.scale.train import train_from_store

    data = {"train": rotation_data(32, 0, C=8), "val": rotation_data(8, 1, C=8), "test": rotation_data(8, 2, C=8)}
    train = _store_with(tmp_path / "train.zarr", data, ["ccw", "cw"], _extraction(protocol="random:8:0"))
    train_from_store(train.url, tmp_path / "run",
                     ScaleConfig(hidden_dim=16, num_heads=2, head_hidden=16, proj_dim=8, clips_per_set=4,
                                 epochs=1, batch_size=16, device="cpu"))
    cfg = _cfg(rows=["knn"])
    same = _store_with(tmp_path / "same.zarr", data, ["ccw", "cw"], _extraction(protocol="5x3"))
    assert evaluate_run(tmp_path / "run", train.url, same.url, tmp_path / "ok", cfg=cfg)["rows"]["knn"]
    cases = {
        "classes.zarr": (["ccw", "cw", "still"], _extraction(), "has classes \\[ccw, cw\\] .* has \\[ccw, cw, still\\]"),
        "backbone.zarr": (["ccw", "cw"], _extraction(backbone="tiny_frame"), "backbone.name \\('tiny' != 'tiny_frame'\\)"),
        "weights.zarr": (["ccw", "cw"], _extraction(weights="w1"), "backbone.weights"),
        "crop.zarr": (["ccw", "cw"], _extraction(crop_fraction=0.875), "extract.crop_fraction"),
    }
    for name, (classes, config, message) in cases.items():
        other = _store_with(tmp_path / name, data, classes, config)
        with pytest.raises(StoreError, match=message) as err:
            evaluate_run(tmp_path / "run", train.url, other.url, tmp_path / name.replace(".zarr", ""), cfg=cfg)
        text = str(err.value)
        assert "\n" not in text and train.url in text and other.url in text and "--allow-mismatch" in text
        assert not (tmp_path / name.replace(".zarr", "")).exists()  # refused before any work
        # The override evaluates anyway.
        evaluate_run(tmp_path / "run", train.url, other.url, tmp_path / "forced", cfg=cfg, allow_mismatch=True)
    # Heads trained on another extraction than the run's training store: refused too.
    other = _store_with(tmp_path / "other_train.zarr", data, ["ccw", "cw"], _extraction(backbone="tiny_frame"))
    with pytest.raises(StoreError, match="SCALE run .* was trained on .*train.zarr whose features differ"):
        evaluate_run(tmp_path / "run", other.url, other.url, tmp_path / "x", cfg=cfg)
