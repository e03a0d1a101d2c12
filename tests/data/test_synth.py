import json
from pathlib import Path

import av
import decord
import numpy as np
import pytest
from scipy.stats import ks_2samp

from vidcache.data.manifest import read_manifest
from vidcache.data.synth import (
    CLASS_NAMES,
    CLASS_PAIRS,
    SynthConfig,
    _video_rng,
    class_kind,
    render_video,
    synth_classes,
    synthesize,
)
from vidcache.errors import ConfigError, DataError

CFG = SynthConfig(videos=24, classes=4, seed=7, size=32, frames=12, fps=8)
MOTION_PAIRS = [p for p in CLASS_PAIRS if class_kind(p[0]) == "motion"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "corpus"
    calls = []
    m = synthesize(out, CFG, progress=lambda done, total: calls.append((done, total)))
    return out, m, calls


def test_class_order_and_kinds():
    assert len(CLASS_NAMES) == len(set(CLASS_NAMES)) == 16
    assert synth_classes(2) == ["motion_left", "motion_right"]
    assert synth_classes(4) == ["motion_left", "motion_right", "appearance_disc", "appearance_square"]
    for a, b in CLASS_PAIRS:
        assert class_kind(a) == class_kind(b)
    kinds = [class_kind(c) for c in synth_classes(12)]
    assert kinds.count("motion") == 8 and kinds.count("appearance") == 4
    with pytest.raises(DataError, match="motion_ or appearance_"):
        class_kind("walking")
    with pytest.raises(DataError, match="2..16"):
        synth_classes(17)


def test_config_reports_every_problem():
    bad = SynthConfig(videos=1, classes=20, size=33, frames=1, fps=0, val_fraction=0.6, test_fraction=0.5,
                      crf=60, noise=-1)
    problems = bad.validate()
    assert len(problems) == 8, problems  # the two fractions share one message
    with pytest.raises(ConfigError, match="size must be even"):
        synthesize("unused", bad)
    assert CFG.validate() == []


def test_files_decode_with_pyav_and_decord(corpus):
    out, m, _ = corpus
    assert len(m) == 24 and all(Path(p).is_file() for p in m.paths)
    for p in m.paths[:6]:
        with av.open(p) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
            assert c.streams.video[0].codec_context.name == "h264"
            assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
        assert len(frames) == CFG.frames and frames[0].shape == (CFG.size, CFG.size, 3)
        vr = decord.VideoReader(p)
        assert len(vr) == CFG.frames and vr[0].shape == (CFG.size, CFG.size, 3)
        assert vr.get_avg_fps() == pytest.approx(CFG.fps)
        batch = vr.get_batch([0, CFG.frames - 1]).asnumpy()
        assert np.abs(batch[1].astype(int) - frames[-1]).mean() < 2  # both decoders read the same pixels


def test_file_holds_the_rendered_video(corpus):
    out, m, _ = corpus
    rendered, _ = render_video(m.classes[m.labels[0]], _video_rng(CFG.seed, 0), CFG.size, CFG.frames, CFG.noise)
    with av.open(m.paths[0]) as c:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    err = np.abs(decoded.astype(int) - rendered).mean()
    assert err < 10, err  # lossy, but the same picture
    other, _ = render_video(m.classes[m.labels[0]], _video_rng(CFG.seed, 4), CFG.size, CFG.frames, CFG.noise)
    assert np.abs(decoded.astype(int) - other).mean() > 2 * err


def test_manifest_labels_and_splits(corpus):
    out, m, calls = corpus
    assert calls[0] == (1, 24) and calls[-1] == (24, 24) and len(calls) == 24
    back = read_manifest(out / "manifest.csv")
    assert back.classes == m.classes == synth_classes(4)
    assert (out / "classes.txt").read_text().split() == synth_classes(4)
    assert back.labels.tolist() == [i % 4 for i in range(24)] == m.labels.tolist()
    assert back.splits == m.splits and back.paths == m.paths
    for y in range(4):
        splits = [s for s, lab in zip(m.splits, m.labels) if lab == y]
        assert sorted(splits) == ["test", "train", "train", "train", "train", "val"]
    for p, y in zip(m.paths, m.labels):
        assert Path(p).parent.name == m.classes[y]
    meta = json.loads((out / "synth.json").read_text())
    assert meta["config"]["seed"] == 7 and meta["kinds"]["appearance_disc"] == "appearance"


def test_same_seed_same_bytes_other_seed_differs(corpus, tmp_path):
    out, m, _ = corpus
    again = synthesize(tmp_path / "again", CFG)
    rel = lambda root, ps: [str(Path(p).relative_to(root)) for p in ps]  # noqa: E731
    assert rel(tmp_path / "again", again.paths) == rel(out, m.paths)
    for a, b in zip(m.paths, again.paths):
        assert Path(a).read_bytes() == Path(b).read_bytes()
    assert (out / "manifest.csv").read_bytes() == (tmp_path / "again" / "manifest.csv").read_bytes()
    parallel = synthesize(tmp_path / "parallel", SynthConfig(**{**CFG.__dict__, "videos": 6}), workers=2)
    for a, b in zip(m.paths, parallel.paths):
        assert Path(a).read_bytes() == Path(b).read_bytes()
    other = synthesize(tmp_path / "other", SynthConfig(**{**CFG.__dict__, "seed": 8, "videos": 4}))
    for a, b in zip(m.paths, other.paths):
        assert Path(a).read_bytes() != Path(b).read_bytes()


def test_overwrite_rules(tmp_path):
    small = SynthConfig(videos=2, classes=2, size=16, frames=4)
    synthesize(tmp_path / "c", small)
    with pytest.raises(DataError, match="not empty"):
        synthesize(tmp_path / "c", small)
    m = synthesize(tmp_path / "c", SynthConfig(videos=3, classes=3, size=16, frames=4), overwrite=True)
    assert sorted(p.parent.name for p in (tmp_path / "c" / "videos").rglob("*.mp4")) == sorted(m.classes)

    def interrupt(done, total):
        if done == 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        synthesize(tmp_path / "cut", SynthConfig(videos=4, classes=2, size=16, frames=4), progress=interrupt)
    assert not (tmp_path / "cut" / "manifest.csv").exists()  # an unfinished corpus has no manifest
    assert len(synthesize(tmp_path / "cut", small, overwrite=True)) == 2
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("x")
    with pytest.raises(DataError, match="not a synthetic corpus"):
        synthesize(tmp_path / "mine", small, overwrite=True)
    assert (tmp_path / "mine" / "thesis.tex").is_file()


# ---------------------------------------------------------------------------- the corpus' purpose

N, SIZE, T = 80, 24, 8


def render_many(name, n=N, size=SIZE, frames=T, offset=0):
    # Independent seeds per class: with shared seeds the two classes of a pair render the same frame 0.
    out = [render_video(name, np.random.default_rng([11, offset, CLASS_NAMES.index(name), i]), size, frames)
           for i in range(n)]
    return np.stack([v for v, _ in out]), [info for _, info in out]


def frame_features(frames):
    """Per-video statistics of ONE frame [n, H, W, 3]: where strong edges are (2x2 cells), how many,
    and the mean colour. Background grain and camera noise stay below the edge threshold."""
    f = frames.astype(np.float64)
    edges = (np.abs(np.diff(f, axis=1))[:, :, :-1] + np.abs(np.diff(f, axis=2))[:, :-1, :]).max(-1) > 45
    n, h, w = edges.shape
    cells = edges[:, : h // 2 * 2, : w // 2 * 2].reshape(n, 2, h // 2, 2, w // 2).mean((2, 4)).reshape(n, 4)
    return np.concatenate([cells, edges.mean((1, 2))[:, None], frames.reshape(n, -1, 3).mean(1)], axis=1)


def max_z(fa, fb):
    z = (fa.mean(0) - fb.mean(0)) / np.sqrt(fa.var(0) / len(fa) + fb.var(0) / len(fb) + 1e-12)
    return np.abs(z).max()


def global_flow(video):
    """Least-squares image motion (vx, vy) from brightness constancy, summed over the video."""
    g = video.astype(np.float64).mean(-1)
    ix = (np.roll(g, -1, 2) - np.roll(g, 1, 2)) / 2
    iy = (np.roll(g, -1, 1) - np.roll(g, 1, 1)) / 2
    it = g[1:] - g[:-1]
    ix, iy = (ix[1:] + ix[:-1]) / 2, (iy[1:] + iy[:-1]) / 2
    return -(ix * it).sum(), -(iy * it).sum()


@pytest.mark.parametrize("pair", MOTION_PAIRS, ids=lambda p: "/".join(p))
def test_motion_pair_is_not_separable_from_one_frame(pair):
    (va, ia), (vb, ib) = render_many(pair[0]), render_many(pair[1])
    for t in (0, T // 2, T - 1):
        z = max_z(frame_features(va[:, t]), frame_features(vb[:, t]))
        assert z < 4.5, (t, z)
    # The hidden state of each frame has one distribution in both classes.
    for key, wrap in (("cx", None), ("cy", None), ("angle", 2 * np.pi), ("radius", None)):
        for t in (0, T - 1):
            a, b = np.array([i[key][t] for i in ia]), np.array([i[key][t] for i in ib])
            if wrap:
                a, b = np.mod(a, wrap), np.mod(b, wrap)
            if np.ptp(np.concatenate([a, b])) > 0:
                assert ks_2samp(a, b).pvalue > 1e-3, (key, t)


def test_control_one_frame_statistics_catch_a_biased_start():
    # What a naive corpus would do: leftward objects start on the left half, rightward on the right.
    (va, ia), (vb, ib) = render_many("motion_left"), render_many("motion_right")
    left = np.array([i["cx"][0] < SIZE / 2 for i in ia])
    right = np.array([i["cx"][0] >= SIZE / 2 for i in ib])
    assert max_z(frame_features(va[left, 0]), frame_features(vb[right, 0])) > 4.5
    start_a = [i["cx"][0] for i, k in zip(ia, left) if k]
    start_b = [i["cx"][0] for i, k in zip(ib, right) if k]
    assert ks_2samp(start_a, start_b).pvalue < 1e-3


@pytest.mark.parametrize("pair,axis", [(("motion_left", "motion_right"), 0), (("motion_up", "motion_down"), 1)])
def test_motion_pair_is_separated_by_time(pair, axis):
    n = 30
    (va, _), (vb, _) = render_many(pair[0], n=n, frames=12, offset=1), render_many(pair[1], n=n, frames=12, offset=1)
    fa = np.array([global_flow(v)[axis] for v in va])
    fb = np.array([global_flow(v)[axis] for v in vb])
    accuracy = ((fa < 0).sum() + (fb > 0).sum()) / (2 * n)  # left/up move towards smaller coordinates
    assert accuracy >= 0.9, accuracy


def test_trajectories_follow_their_class():
    for name, check in [
        ("motion_cw", lambda i: np.all(np.diff(i["angle"]) > 0)),
        ("motion_ccw", lambda i: np.all(np.diff(i["angle"]) < 0)),
        ("motion_grow", lambda i: np.median(np.sign(np.diff(i["radius"]))) > 0),
        ("motion_shrink", lambda i: np.median(np.sign(np.diff(i["radius"]))) < 0),
        ("motion_left", lambda i: np.all(np.diff(i["angle"]) == 0) and np.ptp(i["cy"]) == 0),
    ]:
        _, infos = render_many(name, n=10)
        assert all(check(i) for i in infos), name
    _, fast = render_many("motion_fast", n=10)
    _, slow = render_many("motion_slow", n=10)

    def step(i):  # displacement over one frame, on the torus
        d = np.array([i["cx"][1] - i["cx"][0], i["cy"][1] - i["cy"][0]])
        return np.hypot(*(np.mod(d + SIZE / 2, SIZE) - SIZE / 2))
    assert min(step(i) for i in fast) > 2 * max(step(i) for i in slow) > 0


def test_long_videos_encode_and_keep_their_frame_count(tmp_path):
    # The muxer once rejected B-frame timestamps from ~48 frames on; make sure long videos write.
    import av

    from vidcache.data.synth import SynthConfig, synthesize

    m = synthesize(tmp_path / "c", SynthConfig(videos=2, classes=2, size=32, frames=64))
    with av.open(m.paths[0]) as c:
        assert sum(1 for _ in c.decode(video=0)) == 64


def test_shared_look_gives_every_video_one_background_and_object():
    def video(index, shared):
        look = np.random.default_rng([3, 0x100C]) if shared else None
        return render_video("motion_left", _video_rng(3, index), 32, 4, noise=0.0, look_rng=look)

    (a, ia), (b, ib) = video(0, True), video(1, True)
    assert ia["cx"][0] != ib["cx"][0]  # the trajectories stay per video

    def background(info):  # pixels of frame 0 farther than 1.2 radii from the object (torus)
        yy, xx = np.mgrid[:32, :32] + 0.5
        d = lambda p, c: np.mod(p - c + 16, 32) - 16
        return np.hypot(d(xx, info["cx"][0]), d(yy, info["cy"][0])) > 1.2 * info["radius"][0] + 1

    both = background(ia) & background(ib)
    assert both.sum() > 200
    np.testing.assert_array_equal(a[0][both], b[0][both])
    c, ic = video(1, False)  # without it, each video draws its own scene
    assert np.abs(a[0][background(ia) & background(ic)].astype(int) - c[0][background(ia) & background(ic)]).mean() > 10


def test_shared_look_corpus_is_a_config_field(tmp_path):
    m = synthesize(tmp_path / "c", SynthConfig(videos=2, classes=2, size=16, frames=4, shared_look=True))
    assert json.loads((tmp_path / "c" / "synth.json").read_text())["config"]["shared_look"] is True
    assert len(m) == 2


def test_ground_truth_masks_follow_the_object(corpus):
    """Masks are indexed PNGs of id 1 that cover the drawn object; the manifest names their folders."""
    from vidcache.data.davis import read_mask
    from vidcache.data.synth import render_video

    root, manifest, _ = corpus
    assert manifest.masks is not None and len(manifest.masks) == len(manifest)
    cfg = SynthConfig(**json.loads((root / "synth.json").read_text())["config"])
    i = 0
    name = manifest.classes[manifest.labels[i]]
    video, info = render_video(name, _video_rng(cfg.seed, i), cfg.size, cfg.frames, cfg.noise)
    for f in (0, cfg.frames - 1):
        ids = read_mask(Path(manifest.masks[i]) / f"{f:05d}.png")
        np.testing.assert_array_equal(ids, info["mask"][f])
        assert set(np.unique(ids).tolist()) == {0, 1}
        # the object is drawn where the mask is: pixels differ from the static background there
        bg_diff = np.abs(video[f].astype(int) - video[(f + cfg.frames // 2) % cfg.frames].astype(int)).sum(-1)
        assert ids.sum() > 10 and bg_diff[ids == 1].mean() > bg_diff[ids == 0].mean()


def test_flow_moves_mask_pixels_onto_the_next_mask():
    """Warping frame t's object pixels by the flow lands them inside frame t+1's mask; background flow is 0."""
    from vidcache.data.synth import render_video

    for name, speed in (("motion_right", True), ("motion_cw", False), ("motion_grow", False)):
        _, info = render_video(name, np.random.default_rng(3), 64, 12, 0.0)
        mask, flow = info["mask"], info["flow"].astype(np.float64)
        assert flow.shape == (11, 64, 64, 2)
        assert np.all(flow[mask[:-1] == 0] == 0)
        hits = []
        for t in range(11):
            ys, xs = np.nonzero(mask[t])
            x2 = np.round(xs + flow[t, ys, xs, 0]).astype(int) % 64
            y2 = np.round(ys + flow[t, ys, xs, 1]).astype(int) % 64
            hits.append(mask[t + 1][y2, x2].mean())
        assert np.mean(hits) > 0.9, name
        if speed:  # translation: every object pixel moves by the centre's step
            step = np.mod(np.diff(info["cx"]) + 32, 64) - 32
            np.testing.assert_allclose(flow[0][mask[0] == 1][:, 0], step[0], atol=2e-2)


def test_flow_file_and_no_ground_truth_option(tmp_path):
    m = synthesize(tmp_path / "a", SynthConfig(videos=2, classes=2, size=16, frames=4))
    flow = np.load(tmp_path / "a" / "flow" / m.classes[0] / "00000.npz")["flow"]
    assert flow.shape == (3, 16, 16, 2) and flow.dtype == np.float16
    m2 = synthesize(tmp_path / "b", SynthConfig(videos=2, classes=2, size=16, frames=4, ground_truth=False))
    assert m2.masks is None and not (tmp_path / "b" / "annotations").exists()
    assert (tmp_path / "b" / "manifest.csv").read_text().splitlines()[0] == "path,label,split"


def test_interrupting_parallel_synthesis_drops_the_queued_videos(tmp_path):
    """Ctrl-C (or a failed video) with workers stops at once: the queued videos are not made first."""
    def interrupt(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        synthesize(tmp_path / "c", SynthConfig(videos=400, classes=4, size=32, frames=16, seed=0),
                   progress=interrupt, workers=2)
    made = list((tmp_path / "c" / "videos").rglob("*.mp4"))
    assert 1 <= len(made) < 40, len(made)  # the videos being written when it stopped, not all 400
    assert not (tmp_path / "c" / "manifest.csv").exists()  # no manifest: the corpus is not complete
