"""The block runner (extract/runner.py) with a numpy-only job: resume, failures, metadata, the Job protocol."""

import os

import numpy as np
import pytest

from vidcache.cache import DONE, FAILED, PENDING, ArraySpec, Store
from vidcache.data.manifest import Manifest
from vidcache.errors import VidcacheError
from vidcache.extract.runner import Block, Job, run_extraction, run_extractions

BLOCK = 4


class NumberWorker:
    """Decode-worker side: a 'video' is a text file holding an integer; "crash" kills the worker."""

    def __init__(self, seen: list | None = None):
        self.seen = seen

    def __call__(self, row: int, path: str) -> dict:
        if self.seen is not None:
            self.seen.append(row)
        text = open(path).read()
        if text == "crash":
            os._exit(3)
        n = int(text)  # "garbage" raises ValueError: the video fails with that message
        return {"meta": {"num_frames": n, "fps": 2.5, "height": 8 + n, "width": 16}, "n": n, "num_clips": 2}


class NumberJob(Job):
    """Main-process side: clips/emb[row] = (n, 2n); the job's own metadata videos/double = 2n.
    A number in `refuse` is failed by the job itself (as a model that cannot take a video would)."""

    kind = "clips"

    def __init__(self, scale: float = 1.0, refuse=(), seen: list | None = None):
        self.scale, self.refuse, self.seen = scale, set(refuse), seen
        self.blocks: list[tuple[int, int]] = []

    def store_config(self) -> dict:
        return {"job": "numbers", "scale": self.scale}

    def arrays(self) -> dict[str, ArraySpec]:
        return {"clips/emb": ArraySpec((2,), "float32"), "videos/double": ArraySpec((), "int32")}

    def store_attrs(self) -> dict:
        return {"note": "numbers"}

    def worker_fn(self) -> NumberWorker:
        return NumberWorker(self.seen)

    def begin_block(self, start: int, stop: int) -> None:
        self.blocks.append((start, stop))
        self.start = start
        self.emb = np.zeros((stop - start, 2), np.float32)
        self.double = np.zeros(stop - start, np.int32)

    def add(self, row: int, payload: dict | None) -> None:
        if payload is None:
            return
        n = payload["n"]
        if n in self.refuse:
            raise VidcacheError(f"the job cannot take {n}")
        self.emb[row - self.start] = (self.scale * n, self.scale * 2 * n)
        self.double[row - self.start] = 2 * n

    def end_block(self) -> Block:
        return Block({"clips/emb": self.emb}, {"double": self.double})


def corpus(tmp_path, values) -> Manifest:
    paths = []
    for i, v in enumerate(values):
        p = tmp_path / "videos" / f"v{i}.txt"
        p.parent.mkdir(exist_ok=True)
        p.write_text(str(v))
        paths.append(str(p))
    return Manifest(paths, np.arange(len(values)) % 2, ["train"] * len(values), ["a", "b"])


def read(url):
    store = Store.open(url)
    videos = {**store.videos(), "double": store.read_rows("videos/double", np.arange(store.num_videos))}
    return store, videos, store.read_rows("clips/emb", np.arange(store.num_videos))


def test_full_run_writes_data_worker_sizes_and_block_metadata(tmp_path):
    m = corpus(tmp_path, range(1, 11))
    s = run_extraction(NumberJob(), m, str(tmp_path / "s.zarr"), workers=0, videos_per_block=BLOCK)
    assert s.counts == {"done": 10, "failed": 0, "pending": 0} and s.videos == 10 and s.clips == 20
    store, v, emb = read(tmp_path / "s.zarr")
    n = np.arange(1, 11)
    np.testing.assert_array_equal(emb, np.stack([n, 2 * n], 1).astype(np.float32))
    np.testing.assert_array_equal(v["double"], 2 * n)  # the job's Block.meta
    np.testing.assert_array_equal(v["num_frames"], n)  # the sizes the worker reported
    np.testing.assert_array_equal(v["height"], 8 + n)
    np.testing.assert_array_equal(v["fps"], np.full(10, 2.5, np.float32))
    assert store.attrs["note"] == "numbers" and store.config == {"job": "numbers", "scale": 1.0}
    assert store.verify().ok


def test_failing_videos_are_failed_with_their_reason_and_the_run_goes_on(tmp_path):
    m = corpus(tmp_path, [1, 2, "garbage", 4, 5, 6, "crash", 8, 9])
    s = run_extraction(NumberJob(refuse={5}), m, str(tmp_path / "s.zarr"), workers=1, videos_per_block=BLOCK)
    assert s.counts == {"done": 6, "failed": 3, "pending": 0}
    assert s.restarts == 1  # the crashed worker was replaced
    store, v, emb = read(tmp_path / "s.zarr")
    assert v["status"].tolist() == [DONE, DONE, FAILED, DONE, FAILED, DONE, FAILED, DONE, DONE]
    errors = {int(r): str(e) for r, e in enumerate(v["error"]) if e}
    assert sorted(errors) == [2, 4, 6]
    assert errors[2].startswith("ValueError: invalid literal for int()") and "'garbage'" in errors[2]
    assert errors[4] == "the job cannot take 5"
    assert "exit" in errors[6] and "3" in errors[6]
    assert [f["row"] for f in s.failures] == [2, 4, 6]
    # failed rows keep the fill value, and their metadata is zero; the others hold their data
    assert not emb[[2, 4, 6]].any() and v["double"][[2, 4, 6]].tolist() == [0, 0, 0]
    np.testing.assert_array_equal(emb[[0, 1, 3, 5, 7, 8], 0], [1, 2, 4, 6, 8, 9])
    assert store.verify().ok


class StopAt(NumberJob):
    """Raises at the end of block `stop`, as a kill would: that block and those after stay pending."""

    def __init__(self, stop: int, **kw):
        super().__init__(**kw)
        self.stop = stop

    def end_block(self) -> Block:
        if self.start // BLOCK == self.stop:
            raise KeyboardInterrupt
        return super().end_block()


def test_resume_after_a_partial_run_writes_only_the_missing_blocks(tmp_path):
    m = corpus(tmp_path, [1, 2, 3, 4, 5, "garbage", 7, 8, 9, 10, 11])
    url = str(tmp_path / "s.zarr")
    with pytest.raises(KeyboardInterrupt):
        run_extraction(StopAt(1), m, url, workers=0, videos_per_block=BLOCK)
    assert Store.open(url).status().tolist() == [DONE] * 4 + [PENDING] * 7
    seen: list[int] = []
    job = NumberJob(seen=seen)
    s = run_extraction(job, m, url, workers=0, videos_per_block=BLOCK)
    assert job.blocks == [(4, 8), (8, 11)]  # block 0 is not redone...
    assert seen == list(range(4, 11))  # ...nor are its videos decoded again
    assert s.videos == 7 and s.counts == {"done": 10, "failed": 1, "pending": 0}
    run_extraction(NumberJob(), m, str(tmp_path / "ref.zarr"), workers=0, videos_per_block=BLOCK)
    _, v, emb = read(url)
    _, ref_v, ref_emb = read(tmp_path / "ref.zarr")
    np.testing.assert_array_equal(emb, ref_emb)
    for k in ("status", "error", "double", "num_frames", "height"):
        np.testing.assert_array_equal(v[k], ref_v[k])
    # a finished store: nothing left to do, nothing decoded
    seen.clear()
    again = NumberJob(seen=seen)
    assert run_extraction(again, m, url, workers=0).videos == 0 and again.blocks == [] and seen == []


def test_one_decode_pass_feeds_every_store_and_failures_stay_in_their_store(tmp_path):
    m = corpus(tmp_path, range(1, 7))
    seen: list[int] = []
    a, b = NumberJob(seen=seen), NumberJob(scale=3.0, refuse={2})
    b.seen = seen  # equal workers: one decode pass
    run_extractions([a, b], m, [str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr")], workers=0,
                    videos_per_block=BLOCK)
    assert seen == list(range(6))  # each video decoded once for both stores
    _, va, ea = read(tmp_path / "a.zarr")
    _, vb, eb = read(tmp_path / "b.zarr")
    assert (va["status"] == DONE).all() and vb["status"].tolist() == [DONE, FAILED, DONE, DONE, DONE, DONE]
    np.testing.assert_array_equal(eb[[0, 2]], 3 * ea[[0, 2]])
    with pytest.raises(VidcacheError, match="preprocess videos identically"):
        run_extractions([NumberJob(), NumberJob(seen=[])], m, [str(tmp_path / "c.zarr"), str(tmp_path / "d.zarr")],
                        workers=0)


# ---- the Job protocol
class Minimal(Job):
    kind = "clips"


def test_protocol_defaults():
    assert Minimal().static_arrays() == {} and Minimal().suggested_block() is None


class WithCodebook(NumberJob):
    def static_arrays(self):
        return {"clips/token_codebook": (np.arange(6, dtype=np.float32).reshape(2, 3), {"m": 2})}


def test_static_arrays_are_written_with_the_store(tmp_path):
    run_extraction(WithCodebook(), corpus(tmp_path, [1, 2]), str(tmp_path / "s.zarr"), workers=0)
    arr = Store.open(tmp_path / "s.zarr").group["clips/token_codebook"]
    np.testing.assert_array_equal(arr[...], np.arange(6).reshape(2, 3))
    assert dict(arr.attrs) == {"m": 2}


class MissingMeta(NumberJob):
    def end_block(self) -> Block:
        return Block({"clips/emb": self.emb})


class OldStyle(NumberJob):
    def end_block(self):
        return {"clips/emb": self.emb, "_meta": {"double": self.double}}


@pytest.mark.parametrize("job, words", [
    (MissingMeta(), r"MissingMeta.end_block gave arrays \['clips/emb'\] and metadata \[\]; its arrays\(\) "
                    r"declare \['clips/emb'\] and \['double'\]"),
    (OldStyle(), "OldStyle.end_block returned dict, not a runner.Block"),
])
def test_a_block_off_the_protocol_is_refused_and_nothing_is_marked_done(tmp_path, job, words):
    url = str(tmp_path / "s.zarr")
    with pytest.raises(VidcacheError, match=words):
        run_extraction(job, corpus(tmp_path, [1, 2, 3]), url, workers=0)
    assert (Store.open(url).status() == PENDING).all()


def test_remote_videos_without_their_filesystem_are_one_line_before_any_store(tmp_path, monkeypatch):
    import fsspec

    from vidcache.errors import DataError

    real = fsspec.get_filesystem_class

    def no_s3fs(proto):
        if proto == "s3":
            raise ImportError("Install s3fs to access S3")
        return real(proto)

    monkeypatch.setattr(fsspec, "get_filesystem_class", no_s3fs)
    m = corpus(tmp_path, [1, 2])
    m = Manifest([m.paths[0], "s3://bucket/a.mp4", "s3://bucket/b.mp4", "nosuchfs://x/c.mp4"], np.zeros(4, int),
                 ["train"] * 4, ["a", "b"])
    with pytest.raises(DataError) as err:
        run_extraction(NumberJob(), m, str(tmp_path / "s.zarr"), workers=0)
    assert str(err.value) == ("nosuchfs://x/c.mp4: unknown URL protocol nosuchfs:// (fsspec knows no such "
                              "filesystem); s3://bucket/a.mp4: s3:// URLs need s3fs: pip install 'vidcache[s3]'")
    assert not (tmp_path / "s.zarr").exists()
