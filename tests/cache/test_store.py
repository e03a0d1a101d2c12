import json

import h5py
import numpy as np
import pytest
import zarr
import zarr.core.attributes

from vidcache.cache import DONE, FAILED, PENDING, ArraySpec, Store
from vidcache.data.manifest import Manifest
from vidcache.errors import DataError, StoreError

C, D = 3, 8
ARRAYS = {"clips/emb": ArraySpec((C, D), "float16"), "clips/box": ArraySpec((C, 6), "float32"),
          "clips/tokens": ArraySpec((C, 4, D), "float16", videos_per_chunk=1)}


def make_manifest(n=21):
    splits = ["train", "val", "test"]
    return Manifest([f"v{i}.mp4" for i in range(n)], np.arange(n) % 3, [splits[i % 3] for i in range(n)],
                    ["a", "b", "c"])


def fake_block(store, b, rng):
    s, e = store.block_range(b)
    n = e - s
    return {"clips/emb": rng.standard_normal((n, C, D)).astype(np.float16),
            "clips/box": rng.random((n, C, 6)).astype(np.float32),
            "clips/tokens": rng.standard_normal((n, C, 4, D)).astype(np.float16)}


def test_two_ranks_write_shuffled_blocks_and_load_equals_written(tmp_path, rng):
    m = make_manifest(21)
    store = Store.create(tmp_path / "s.zarr", "clips", m, {"backbone": "x"}, ARRAYS, videos_per_block=4)
    assert store.num_blocks == 6
    assert store.blocks_for(0, 2) == [0, 2, 4] and store.blocks_for(1, 2) == [1, 3, 5]
    expected = {}
    order = [(r, b) for r in (0, 1) for b in store.blocks_for(r, 2)]
    for i in rng.permutation(len(order)):
        rank, b = order[i]
        w = Store.open(tmp_path / "s.zarr", mode="r+")  # each "rank" opens its own handle
        data = fake_block(w, b, rng)
        w.write_block(b, data, [DONE] * len(data["clips/emb"]), meta={"num_frames": [10] * len(data["clips/emb"])})
        expected[b] = data
    r = Store.open(tmp_path / "s.zarr")
    assert r.pending_blocks() == []
    full = {k: np.concatenate([expected[b][k] for b in range(6)]) for k in ARRAYS}
    out = r.load(("emb", "box", "tokens"), split="val")
    rows = np.arange(21)[1::3]
    np.testing.assert_array_equal(out["index"], rows)
    np.testing.assert_array_equal(out["label"], rows % 3)
    np.testing.assert_array_equal(out["emb"], full["clips/emb"][rows])
    np.testing.assert_array_equal(out["box"], full["clips/box"][rows])
    np.testing.assert_array_equal(out["tokens"], full["clips/tokens"][rows])
    assert r.verify().ok
    assert r.counts() == {"done": 21, "failed": 0, "pending": 0}
    assert (r.videos()["num_frames"] == 10).all()


def test_pending_blocks_and_failed_rows(tmp_path, rng):
    store = Store.create(tmp_path / "s.zarr", "clips", make_manifest(10), {"a": 1}, ARRAYS, videos_per_block=4)
    assert store.pending_blocks() == [0, 1, 2]
    data = fake_block(store, 1, rng)
    store.write_block(1, data, [DONE, FAILED, DONE, DONE], ["", "decode error: truncated", "", ""])
    assert store.pending_blocks() == [0, 2]
    assert store.pending_blocks(rank=1, world=2) == []
    info = store.info()
    assert info["counts"] == {"done": 3, "failed": 1, "pending": 6}
    assert info["failures"] == [{"row": 5, "path": "v5.mp4", "error": "decode error: truncated"}]
    with pytest.raises(StoreError, match="without an error"):
        store.write_block(0, fake_block(store, 0, rng), [FAILED, DONE, DONE, DONE])
    with pytest.raises(StoreError, match="final status"):
        store.write_block(0, fake_block(store, 0, rng), [PENDING, DONE, DONE, DONE])
    # Only done rows are loaded.
    assert store.load(("emb",))["index"].tolist() == [4, 6, 7]


def test_unreadable_chunk_counts_as_not_done(tmp_path, rng):
    store = Store.create(tmp_path / "s.zarr", "clips", make_manifest(8), {"a": 1}, ARRAYS, videos_per_block=4)
    for b in range(2):
        store.write_block(b, fake_block(store, b, rng), [DONE] * 4)
    assert store.pending_blocks() == []
    chunk = tmp_path / "s.zarr" / "clips" / "emb" / "c" / "1" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:10])  # a write torn by a kill
    assert store.pending_blocks() == [1]
    assert not store.verify().ok


def test_config_mismatch_is_refused_naming_fields(tmp_path):
    m = make_manifest()
    Store.create(tmp_path / "s.zarr", "clips", m, {"backbone": "tiny", "protocol": "5x3"}, ARRAYS)
    same = Store.open_or_create(tmp_path / "s.zarr", "clips", m, {"backbone": "tiny", "protocol": "5x3"}, ARRAYS)
    assert same.config["protocol"] == "5x3"
    with pytest.raises(StoreError, match=r"differs in: protocol \('5x3' != '1x1'\)"):
        Store.open_or_create(tmp_path / "s.zarr", "clips", m, {"backbone": "tiny", "protocol": "1x1"}, ARRAYS)
    with pytest.raises(StoreError, match="another manifest"):
        Store.open_or_create(tmp_path / "s.zarr", "clips", make_manifest(5),
                             {"backbone": "tiny", "protocol": "5x3"}, ARRAYS)
    with pytest.raises(StoreError, match="already exists"):
        Store.create(tmp_path / "s.zarr", "clips", m, {"backbone": "tiny"}, ARRAYS)
    s = Store.open_or_create(tmp_path / "s.zarr", "clips", m, {"backbone": "tiny", "protocol": "1x1"}, ARRAYS,
                             overwrite=True)
    assert s.config["protocol"] == "1x1"


def test_open_checks_schema_kind_and_existence(tmp_path):
    with pytest.raises(StoreError, match="not a vidcache store"):
        Store.open(tmp_path / "nothing.zarr")
    Store.create(tmp_path / "s.zarr", "clips", make_manifest(), {}, ARRAYS)
    with pytest.raises(StoreError, match="is a 'clips' store, expected a 'codes' store"):
        Store.open(tmp_path / "s.zarr", kind="codes")
    meta_file = tmp_path / "s.zarr" / "zarr.json"
    meta = json.loads(meta_file.read_text())
    meta["attributes"]["vidcache"]["schema"] = 99
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="schema 99"):
        Store.open(tmp_path / "s.zarr")


def test_verify_catches_done_row_without_data_and_nan(tmp_path, rng):
    store = Store.create(tmp_path / "s.zarr", "clips", make_manifest(8), {}, ARRAYS, videos_per_block=4)
    data = fake_block(store, 0, rng)
    data["clips/emb"][2] = 0  # "done" but nothing written
    data["clips/box"][3, 0, 0] = np.nan
    store.write_block(0, data, [DONE] * 4)
    report = store.verify()
    assert not report.ok
    text = str(report)
    assert "clips/emb: 1 done row(s) without data (rows [2])" in text
    assert "clips/box: 1 done row(s) with NaN/inf (rows [3])" in text


def test_unknown_split_is_a_clear_error(tmp_path):
    store = Store.create(tmp_path / "s.zarr", "clips", make_manifest(), {}, ARRAYS)
    with pytest.raises(DataError, match="split 'tset' is not in .*splits present: test, train, val"):
        store.load(("emb",), split="tset")


@pytest.mark.parametrize("n", [3, 9])  # fewer videos than one block (the demo's case), and several blocks
def test_hdf5_export_equals_store(tmp_path, rng, n):
    store = Store.create(tmp_path / "s.zarr", "clips", make_manifest(n), {"k": 1}, ARRAYS, videos_per_block=4)
    for b in range(store.num_blocks):
        s, e = store.block_range(b)
        store.write_block(b, fake_block(store, b, rng), [DONE] * (e - s - 1) + [FAILED], [""] * (e - s - 1) + ["bad"])
    store.add_array("clips/token_codebook", np.arange(12, dtype=np.float32).reshape(3, 4))
    out = store.export_h5(tmp_path / "s.h5")
    with h5py.File(out) as f:
        for name in ("clips/emb", "clips/box", "clips/tokens", "videos/status", "videos/label",
                     "clips/token_codebook"):
            np.testing.assert_array_equal(f[name][:], store.group[name][:])
        assert [x.decode() for x in f["videos/path"][:]] == list(store.group["videos/path"][:])
        assert [x.decode() for x in f["videos/error"][:]] == list(store.group["videos/error"][:])
        assert json.loads(f.attrs["config_hash"]) == store.config_hash
        assert f["clips/emb"].shape == (n, C, D) and f["clips/tokens"].shape == (n, C, 4, D)
        assert json.loads(f["clips/tokens"].attrs["dimension_names"]) == ["videos", "clips", "token", "token_dim"]
    assert not (tmp_path / "s.h5.tmp").exists()


@pytest.mark.parametrize("n", [5, 19])
def test_hdf5_export_of_a_code_store(tmp_path, rng, n):
    arrays = {"codes/frames": ArraySpec((6, 2, 2), "uint16", compress=True),
              "videos/num_code_frames": ArraySpec((), "int32")}
    codebook = rng.random((7, 12)).astype(np.float32)
    store = Store.create(tmp_path / "c.zarr", "codes", make_manifest(n), {"k": 2}, arrays, videos_per_block=8,
                         static_arrays={"codes/codebook": (codebook, {"patch": 2})})
    frames = rng.integers(0, 7, (n, 6, 2, 2)).astype(np.uint16)
    for b in range(store.num_blocks):
        s, e = store.block_range(b)
        store.write_block(b, {"codes/frames": frames[s:e]}, [DONE] * (e - s),
                          meta={"num_code_frames": np.full(e - s, 6)})
    with h5py.File(store.export_h5(tmp_path / "c.h5")) as f:
        np.testing.assert_array_equal(f["codes/frames"][:], frames)
        np.testing.assert_array_equal(f["codes/codebook"][:], codebook)
        np.testing.assert_array_equal(f["videos/num_code_frames"][:], np.full(n, 6))
        assert json.loads(f["codes/codebook"].attrs["patch"]) == 2


def test_failed_hdf5_export_leaves_no_temporary_file(tmp_path, rng, monkeypatch):
    store = Store.create(tmp_path / "s.zarr", "clips", make_manifest(3), {}, ARRAYS, videos_per_block=4)

    def broken(*a, **kw):
        raise OSError("disk full")

    monkeypatch.setattr(h5py.File, "create_dataset", broken)
    with pytest.raises(OSError, match="disk full"):
        store.export_h5(tmp_path / "s.h5")
    assert list(tmp_path.glob("s.h5*")) == []


@pytest.mark.parametrize("scheme", ["memory://", "file://"])
def test_fsspec_urls(tmp_path, rng, scheme):
    url = f"{scheme}{tmp_path}/s.zarr" if scheme == "file://" else f"memory://{tmp_path.name}/s.zarr"
    store = Store.create(url, "clips", make_manifest(8), {"a": 1}, ARRAYS, videos_per_block=4)
    data = fake_block(store, 1, rng)
    store.write_block(1, data, [DONE] * 4)
    again = Store.open(url)
    assert again.pending_blocks() == [0]
    np.testing.assert_array_equal(again.load(("emb",))["emb"], data["clips/emb"])
    assert again.info()["bytes_on_disk"] > 0


def test_default_block_keeps_chunks_several_megabytes():
    from vidcache.cache.store import default_videos_per_block

    # [5, 768] float16 = 7,680 bytes per video -> 1,024 videos per block ~ 7.9 MB chunks
    assert default_videos_per_block(100_000, {"clips/emb": ArraySpec((5, 768), "float16")}) == 1024
    assert default_videos_per_block(20, {"clips/emb": ArraySpec((5, 768), "float16")}) == 32


class _Killed(Exception):
    """Stands for the process dying at that line."""


@pytest.mark.parametrize("point", ["first_array", "last_array", "static_array", "final_attributes"])
def test_interrupted_creation_is_redone_by_open_or_create(tmp_path, rng, monkeypatch, point):
    m = make_manifest(9)
    url = tmp_path / "s.zarr"
    cfg = {"backbone": "tiny", "protocol": "5x3"}
    codebook = {"clips/token_codebook": (np.arange(12, dtype=np.float32).reshape(3, 4), {"m": 2})}
    calls = {"create_array": 0}
    n_arrays = 9 + len(ARRAYS)  # videos/* then data arrays; the static array comes after
    orig_create = zarr.Group.create_array
    orig_put = zarr.core.attributes.Attributes.put

    def create_array(self, name, **kw):
        calls["create_array"] += 1
        k = calls["create_array"]
        if (point, k) in {("first_array", 1), ("last_array", n_arrays), ("static_array", n_arrays + 1)}:
            raise _Killed
        return orig_create(self, name, **kw)

    def put(self, d):
        if point == "final_attributes":
            raise _Killed
        return orig_put(self, d)

    with monkeypatch.context() as mp:
        mp.setattr(zarr.Group, "create_array", create_array)
        mp.setattr(zarr.core.attributes.Attributes, "put", put)
        with pytest.raises(_Killed):
            Store.create(url, "clips", m, cfg, ARRAYS, videos_per_block=4, static_arrays=codebook)
    assert (url / "zarr.json").is_file()  # a zarr group is there, but not a store yet
    with pytest.raises(StoreError, match="unfinished store: its creation was interrupted; rerun"):
        Store.open(url)
    with pytest.raises(StoreError, match=r"unfinished store of another config \(differs in: protocol"):
        Store.open_or_create(url, "clips", m, {**cfg, "protocol": "1x1"}, ARRAYS, videos_per_block=4)
    with pytest.raises(StoreError, match="unfinished store of another manifest"):
        Store.open_or_create(url, "clips", make_manifest(5), cfg, ARRAYS, videos_per_block=4)
    store = Store.open_or_create(url, "clips", m, cfg, ARRAYS, videos_per_block=4, static_arrays=codebook)
    ref = Store.create(tmp_path / "ref.zarr", "clips", m, cfg, ARRAYS, videos_per_block=4, static_arrays=codebook)
    again = Store.open(url)
    assert "vidcache_creating" not in again.attrs
    assert {k: v for k, v in again.attrs.items() if k != "vidcache"} == \
        {k: v for k, v in ref.attrs.items() if k != "vidcache"}
    for name in ("videos/path", "videos/label", "videos/split", "videos/status", "clips/token_codebook"):
        np.testing.assert_array_equal(again.group[name][:], ref.group[name][:], err_msg=name)
    assert again.group["clips/token_codebook"].attrs["m"] == 2
    assert store.pending_blocks() == [0, 1, 2]
    store.write_block(0, fake_block(store, 0, rng), [DONE] * 4)
    assert Store.open_or_create(url, "clips", m, cfg, ARRAYS, videos_per_block=4).pending_blocks() == [1, 2]


def test_foreign_zarr_group_is_not_taken_for_an_interrupted_creation(tmp_path):
    zarr.open_group(str(tmp_path / "g.zarr"), mode="w", attributes={"someone": "else"})
    with pytest.raises(StoreError, match="not a vidcache store"):
        Store.open_or_create(tmp_path / "g.zarr", "clips", make_manifest(), {}, ARRAYS)
    s = Store.open_or_create(tmp_path / "g.zarr", "clips", make_manifest(), {}, ARRAYS, overwrite=True)
    assert s.kind == "clips" and "someone" not in s.attrs


def test_arrays_carry_dimension_names(tmp_path):
    store = Store.create(tmp_path / "s.zarr", "clips", make_manifest(), {}, {
        **ARRAYS, "clips/cls": ArraySpec((C, D), "float16"),
        "clips/named": ArraySpec((C,), "float32", dims=("views",))})
    dims = {name: tuple(store.group[name].metadata.dimension_names) for name in
            ("clips/emb", "clips/box", "clips/tokens", "clips/cls", "clips/named", "videos/status", "videos/path")}
    assert dims == {"clips/emb": ("videos", "clips", "dim"), "clips/box": ("videos", "clips", "coord"),
                    "clips/tokens": ("videos", "clips", "token", "token_dim"), "clips/cls": ("videos", "cls_1", "cls_2"),
                    "clips/named": ("videos", "views"), "videos/status": ("videos",), "videos/path": ("videos",)}


def test_verify_a_store_without_done_rows(tmp_path, rng):
    """Every video failed (a manifest of broken files): nothing to check, and no crash."""
    store = Store.create(tmp_path / "s.zarr", "clips", make_manifest(8), {"a": 1}, ARRAYS, videos_per_block=4)
    store.write_block(0, fake_block(store, 0, rng), [FAILED] * 4, ["not a video file"] * 4)
    report = store.verify()
    assert report.ok and report.checked_rows == 0 and report.failed_rows == 4 and report.pending_rows == 4
    assert str(report) == "ok: 0 done rows checked; 4 failed (each with its error), 4 pending"
    empty = Store.create(tmp_path / "e.zarr", "clips", make_manifest(4), {"a": 1}, ARRAYS, videos_per_block=4)
    assert empty.verify().ok and empty.verify().checked_rows == 0


def test_xarray_opens_a_store_with_named_dimensions(tmp_path, rng):
    xr = pytest.importorskip("xarray", reason="xarray is in the test extra")
    store = Store.create(tmp_path / "s.zarr", "clips", make_manifest(9), {}, ARRAYS, videos_per_block=4)
    written = {}
    for b in range(store.num_blocks):
        written[b] = fake_block(store, b, rng)
        store.write_block(b, written[b], [DONE] * len(written[b]["clips/emb"]))
    clips = xr.open_zarr(str(tmp_path / "s.zarr"), group="clips", consolidated=False)
    assert dict(clips.sizes) == {"videos": 9, "clips": C, "dim": D, "coord": 6, "token": 4, "token_dim": D}
    assert clips["emb"].dims == ("videos", "clips", "dim") and clips["tokens"].dims[2] == "token"
    assert set(clips.data_vars) == {"emb", "box", "tokens"}  # none taken for a coordinate
    full = np.concatenate([written[b]["clips/emb"] for b in range(store.num_blocks)])
    np.testing.assert_array_equal(clips["emb"].values, full)
    videos = xr.open_zarr(str(tmp_path / "s.zarr"), group="videos", consolidated=False)
    assert videos["label"].dims == ("videos",)
    np.testing.assert_array_equal(videos["label"].values, np.arange(9) % 3)
    assert list(videos["path"].values) == [f"v{i}.mp4" for i in range(9)]
    # Selecting by label works on the labelled arrays, no vidcache needed.
    sel = clips["emb"].where(videos["label"] == 1, drop=True)
    np.testing.assert_array_equal(sel.values, full[1::3])


def test_splits_are_the_manifest_splits_as_str(tmp_path):
    m = make_manifest(7)
    Store.create(tmp_path / "s.zarr", "clips", m, {}, ARRAYS, videos_per_block=4)
    splits = Store.open(tmp_path / "s.zarr").splits()
    assert splits.dtype.kind in "TU" and splits.shape == (7,)
    assert splits.tolist() == ["train", "val", "test", "train", "val", "test", "train"]
    np.testing.assert_array_equal(np.flatnonzero(splits == "test"), [2, 5])


def test_codebook_round_trip(tmp_path, rng):
    arrays = {"codes/frames": ArraySpec((6, 2, 2), "uint16", compress=True),
              "videos/num_code_frames": ArraySpec((), "int32")}
    centroids = (rng.random((7, 12)) * 255).astype(np.float32)
    attrs = {"patch": 2, "height": 4, "width": 4, "fps": 5.0, "max_frames": 6, "codec": {"k": 7}}
    Store.create(tmp_path / "c.zarr", "codes", make_manifest(5), {"k": 7}, arrays, videos_per_block=8,
                 static_arrays={"codes/codebook": (centroids, attrs)})
    stored = Store.open(tmp_path / "c.zarr", kind="codes").codebook()
    assert stored.centroids.dtype == np.float32
    np.testing.assert_array_equal(stored.centroids, centroids)
    assert stored.attrs == attrs


def test_codebook_of_a_store_without_codes_is_a_clear_error(tmp_path):
    Store.create(tmp_path / "s.zarr", "clips", make_manifest(3), {}, ARRAYS, videos_per_block=4)
    with pytest.raises(StoreError, match=r"'clips' store without codes/codebook.*vidcache extract codes"):
        Store.open(tmp_path / "s.zarr").codebook()


def test_exists_sees_a_group_and_opens_nothing(tmp_path):
    assert not Store.exists(tmp_path / "s.zarr")
    Store.create(tmp_path / "s.zarr", "clips", make_manifest(3), {}, ARRAYS, videos_per_block=4)
    assert Store.exists(tmp_path / "s.zarr") and Store.exists(f"file://{tmp_path / 's.zarr'}")
    assert not Store.exists(tmp_path)
