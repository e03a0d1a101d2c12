import json
import logging

import numpy as np
import pytest
from rich.console import Console

from vidcache.errors import ConfigError, DataError
from vidcache.probe import LinearProbe, ProbeData, make_config, run_probe
from vidcache.probe.report import accuracy_by_group, grid_table, results_table

C, D, K = 2, 8, 3


def make_store(tmp_path, n=36, failed=()):
    from vidcache.cache import DONE, FAILED, ArraySpec, Store
    from vidcache.data.manifest import Manifest

    rng = np.random.default_rng(0)
    splits = [("train", "train", "val", "test")[i % 4] for i in range(n)]
    labels = np.arange(n) % K
    m = Manifest([f"v{i}.mp4" for i in range(n)], labels, splits, ["a", "b", "c"])
    arrays = {"clips/emb": ArraySpec((C, D), "float16"), "clips/box": ArraySpec((C, 6), "float32")}
    store = Store.create(tmp_path / "s.zarr", "clips", m, {"backbone": "test"}, arrays, videos_per_block=4)
    mu = np.random.default_rng(1).normal(size=(8, D)) * 3
    for b in range(store.num_blocks):
        s, e = store.block_range(b)
        emb = (mu[labels[s:e]][:, None] + rng.normal(size=(e - s, C, D))).astype(np.float16)
        status = [FAILED if i in failed else DONE for i in range(s, e)]
        store.write_block(b, {"clips/emb": emb, "clips/box": np.zeros((e - s, C, 6), np.float32)}, status,
                          ["bad file" if i in failed else "" for i in range(s, e)])
    return Store.open(tmp_path / "s.zarr")


def test_run_probe_on_store_skips_failed_and_writes_results(tmp_path, caplog):
    store = make_store(tmp_path, failed=(0, 4))  # two train videos failed
    cfg = make_config("linear", epochs=3, batch_size=8, lrs=[1e-3, 1e-2], wds=[0.0, 0.1], device="cpu")
    with caplog.at_level(logging.WARNING):
        res = run_probe("linear", store, tmp_path / "out", cfg)
    assert "2 failed or unfinished videos skipped" in caplog.text
    assert res["skipped"] == {"train": 2}
    assert res["config_hash"] == store.config_hash and res["num_train"] == 16
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["test"]["top1"] == res["test"]["top1"] and len(saved["grid"]) == 4
    assert saved["selected"]["lr"] in (1e-3, 1e-2) and len(saved["test"]["confusion"]) == K
    assert saved["test"]["top1"] > 80
    back = LinearProbe.load(tmp_path / "out")
    test = ProbeData.from_store_dict(store.load(("emb",), "test"), split="test")
    assert back.evaluate(test)["top1"] == pytest.approx(res["test"]["top1"])
    console = Console(record=True, width=200)
    console.print(results_table(res))
    assert f"{res['test']['top1']:.2f}" in console.export_text() and grid_table(res).row_count == 4


def test_run_probe_by_path_knn_and_mlp(tmp_path):
    make_store(tmp_path)
    for name, kw in (("knn", {"ks": [1, 5]}), ("mlp", {"epochs": 2, "hidden": 16, "lrs": [1e-3], "wds": [0.0]})):
        res = run_probe(name, str(tmp_path / "s.zarr"), tmp_path / name, make_config(name, device="cpu", **kw))
        assert res["probe"] == name and (tmp_path / name / "results.json").exists()
        assert 0 <= res["test"]["top1"] <= 100


def test_missing_val_split_is_an_error_unless_val_fraction(make_clusters, tmp_path):
    data = {"train": make_clusters(30, k=3), "test": make_clusters(9, k=3, seed=2)}
    with pytest.raises(DataError, match="--val-fraction"):
        run_probe("linear", data, None, make_config("linear", epochs=1, device="cpu"))
    res = run_probe("linear", data, None, make_config("linear", epochs=1, val_fraction=0.2, device="cpu",
                                                      lrs=[1e-2], wds=[0.0]))
    assert res["val"]["n"] == 6 and res["num_train"] == 24 and res["val_from_train"] == 0.2


def test_empty_split_and_nan_are_clear_errors(make_clusters):
    empty = ProbeData(np.zeros((0, 2, 8), np.float32), np.zeros(0, np.int64), split="val")
    with pytest.raises(DataError, match="split 'val' has no labelled"):
        run_probe("linear", {"train": make_clusters(9), "val": empty}, None, make_config("linear", device="cpu"))
    bad = make_clusters(9)
    bad.x[2] = np.nan
    with pytest.raises(DataError, match="1 of 9 rows hold NaN"):
        run_probe("knn", {"train": bad, "val": make_clusters(4)}, None, make_config("knn"))


def test_store_with_empty_split_is_a_clear_error(tmp_path):
    store = make_store(tmp_path, n=8, failed=tuple(i for i in range(8) if i % 4 == 2))  # every val video failed
    with pytest.raises(DataError, match="split 'val' has no labelled, finished videos .2 failed"):
        run_probe("linear", store, None, make_config("linear", device="cpu"))


def test_test_classes_missing_from_train_are_warned(make_clusters, caplog):
    tr, va, te = make_clusters(30, k=3), make_clusters(9, k=3, seed=1), make_clusters(12, k=4, seed=2)
    with caplog.at_level(logging.WARNING):
        res = run_probe("knn", {"train": tr, "val": va, "test": te}, None, make_config("knn", ks=[3]))
    assert "1 classes of 'test' have no training video" in caplog.text and res["warnings"]
    assert res["num_classes"] == 4


def test_lowshot_repeats_report_mean_and_std(make_clusters, tmp_path):
    data = {"train": make_clusters(60, k=3), "val": make_clusters(9, k=3, seed=1),
            "test": make_clusters(30, k=3, seed=2, noise=3.0)}
    cfg = make_config("linear", shots=2, repeats=3, epochs=2, lrs=[1e-2], wds=[0.0], device="cpu")
    res = run_probe("linear", data, tmp_path, cfg)
    assert [r["num_train"] for r in res["runs"]] == [6, 6, 6]
    tops = [r["test"]["top1"] for r in res["runs"]]
    assert res["test"]["top1"] == pytest.approx(np.mean(tops)) and res["test_std"]["top1"] == pytest.approx(np.std(tops))
    assert [r["seed"] for r in res["runs"]] == [0, 1, 2]


def test_make_config_rejects_unknown_fields_and_probes():
    with pytest.raises(ConfigError, match="unknown field 'lr'"):
        make_config("linear", lr=0.1)
    with pytest.raises(ConfigError, match="unknown probe"):
        make_config("svm")


def test_accuracy_by_group():
    scores = np.eye(3)[[0, 1, 1, 2]]
    labels = np.array([0, 1, 2, 2])
    out = accuracy_by_group(scores, labels, ["run", "jump", "cat"], lambda c: "motion" if c in ("run", "jump") else "appearance")
    assert out["motion"]["top1"] == 100.0 and out["appearance"]["top1"] == 50.0 and out["appearance"]["n"] == 2


def test_report_mode_travels_with_the_number(tmp_path):
    """--report test: the selected head on test; best-val: the grid's best val score (the references'
    way). Both land in results.json and the results table beside the number."""
    store = make_store(tmp_path)
    kw = dict(epochs=2, batch_size=8, lrs=[1e-4, 1e-2], wds=[0.0], device="cpu")
    a = run_probe("linear", store, tmp_path / "a", make_config("linear", **kw))
    b = run_probe("linear", store, tmp_path / "b", make_config("linear", report="best-val", **kw))
    assert a["report"] == "test" and a["reported"]["split"] == "test"
    assert a["reported"]["top1"] == a["test"]["top1"]
    assert b["report"] == "best-val" and b["reported"]["split"] == "val"
    assert b["reported"]["top1"] == max(g["val_top1"] for g in b["grid"]) == b["val"]["top1"]
    saved = json.loads((tmp_path / "b" / "results.json").read_text())
    assert saved["reported"] == b["reported"] and saved["report"] == "best-val"
    k = run_probe("knn", store, tmp_path / "k", make_config("knn", ks=[1, 3, 5], report="best-val", device="cpu"))
    assert k["reported"]["top1"] == max(g["val_top1"] for g in k["grid"])
    console = Console(record=True, width=250)
    console.print(results_table([a, b]))
    text = console.export_text()
    assert "best-val" in text and "selected on val" in text
    with pytest.raises(Exception, match="report must be one of test, best-val"):
        make_config("linear", report="best")


def test_train_store_trains_on_cached_augmented_views(synth_corpus, tmp_path):
    """--train-store: the probe trains on another store's train split (cached augmented views) and is
    selected and reported on STORE's val / test; stores of another backbone are refused."""
    from vidcache.extract.clips import ClipExtractConfig, extract_clips

    _, manifest = synth_corpus
    kw = dict(tokens="pool:1,1,1", workers=0)
    extract_clips(manifest, str(tmp_path / "eval.zarr"), ClipExtractConfig(protocol="vjepa:2x3", **kw))
    extract_clips(manifest, str(tmp_path / "aug.zarr"), ClipExtractConfig(protocol="vjepa-aug:2x4:0", **kw))
    cfg = make_config("attentive", num_heads=4, epochs=2, batch_size=8, sample="segments", device="cpu",
                      train_store=str(tmp_path / "aug.zarr"))
    res = run_probe("attentive", str(tmp_path / "eval.zarr"), tmp_path / "out", cfg)
    assert res["train_store"]["protocol"] == "vjepa-aug:2x4:0"
    assert res["train_samples"] == 4 * res["num_train"]  # K = 4 augmented views, each 2 segments
    assert 0 <= res["test"]["top1"] <= 100
    extract_clips(manifest, str(tmp_path / "other.zarr"),
                  ClipExtractConfig(protocol="vjepa:2x3", backbone_options={"seed": 1}, **kw))
    with pytest.raises(DataError, match="another backbone"):
        run_probe("attentive", str(tmp_path / "eval.zarr"), None,
                  make_config("attentive", num_heads=4, epochs=1, device="cpu", train_store=str(tmp_path / "other.zarr")))


def test_pos_embed_reads_each_tokens_frame_number_from_the_store(synth_corpus, tmp_path):
    """--pos-embed: load_split rebuilds every temporal token's frame number from clips/box and
    videos/num_frames, equal to the frames the extraction sampled (plan_clips), and the probe runs."""
    from vidcache.cache import Store
    from vidcache.extract.clips import ClipExtractConfig, extract_clips
    from vidcache.extract.sampling import plan_clips
    from vidcache.probe.data import load_split

    _, manifest = synth_corpus
    extract_clips(manifest, str(tmp_path / "s.zarr"),
                  ClipExtractConfig(protocol="vjepa:2x3:0", tokens="pool:2,1,1", workers=0))
    st = Store.open(str(tmp_path / "s.zarr"), kind="clips")
    d = load_split(st, "train", ("tokens",), positions=True)
    clip_len = st.config["clip_len"]
    assert d.extras["frame_pos"].shape == (len(d), 6, 2)
    nf, h, w = (np.asarray(st.group[f"videos/{k}"][:]) for k in ("num_frames", "height", "width"))
    for row, pos in zip(d.index, d.extras["frame_pos"]):
        specs = plan_clips("vjepa:2x3:0", int(nf[row]), int(h[row]), int(w[row]), clip_len, st.config["stride"],
                           video_index=int(row), size=st.config["image_size"])
        if int(nf[row]) // 2 > clip_len * st.config["stride"]:  # windows that fit their partition: exact
            np.testing.assert_array_equal(pos, [s.frame_indices[::clip_len // 2] for s in specs])
    cfg = make_config("attentive", num_heads=4, epochs=1, batch_size=8, sample="segments", device="cpu",
                      pos_embed=True)
    res = run_probe("attentive", str(tmp_path / "s.zarr"), None, cfg)
    assert 0 <= res["test"]["top1"] <= 100
    with pytest.raises(Exception, match="pos_embed .* needs sample=segments"):
        make_config("attentive", pos_embed=True)


def test_probe_on_separate_train_and_test_stores_checks_they_match(tmp_path):
    """A dict of stores trains on one and reports on the other, if they hold one dataset's classes
    and one extraction's features; otherwise one line names both, unless allow_mismatch."""
    from vidcache.cache import Store
    from vidcache.errors import StoreError

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    train, test = make_store(tmp_path / "a"), make_store(tmp_path / "b")
    res = run_probe("knn", {"train": train.url, "test": test.url}, None, make_config("knn", ks=[3]))
    assert res["test"]["top1"] > 50
    other = Store.open(test.url, mode="r+")
    other.group.attrs.update({"classes": ["a", "b", "z"]})
    with pytest.raises(StoreError, match="train store .* has classes \\[a, b, c\\] .* but test store .* has "
                                         "\\[a, b, z\\]") as err:
        run_probe("knn", {"train": train.url, "test": test.url}, None, make_config("knn", ks=[3]))
    assert "\n" not in str(err.value) and "--allow-mismatch" in str(err.value)
    other.group.attrs.update({"classes": ["a", "b", "c"], "config_hashed": {"backbone": "another"}})
    with pytest.raises(StoreError, match="different extractions \\(backbone \\('test' != 'another'\\)\\)"):
        run_probe("knn", {"train": train.url, "test": test.url}, None, make_config("knn", ks=[3]))
    assert run_probe("knn", {"train": train.url, "test": test.url}, None, make_config("knn", ks=[3]),
                     allow_mismatch=True)["test"]["top1"] > 50
