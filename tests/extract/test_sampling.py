"""Sampling protocols: parsing, golden clip plans, short videos, seeded random clips."""

import numpy as np
import pytest

from vidcache.errors import ConfigError, DataError
from vidcache.extract.sampling import (
    RANDOM_RATIO,
    RANDOM_SCALE,
    ClipSpec,
    Protocol,
    boxes,
    frames_needed,
    parse_protocol,
    plan_clips,
)


@pytest.mark.parametrize("text, kind, t, s, seed, name", [
    ("1x1", "grid", 1, 1, 0, "1x1"),
    ("5x3", "grid", 5, 3, 0, "5x3"),
    (" 2X3 ", "grid", 2, 3, 0, "2x3"),
    ("uniform:8", "grid", 8, 1, 0, "uniform:8"),
    ("random:16:7", "random", 16, 1, 7, "random:16:7"),
])
def test_parse_protocol(text, kind, t, s, seed, name):
    p = parse_protocol(text)
    assert (p.kind, p.temporal, p.spatial, p.seed, str(p)) == (kind, t, s, seed, name)
    assert p.num_clips == t * s
    assert parse_protocol(p) is p


@pytest.mark.parametrize("text, words", [
    ("", "use '1x1'"), ("5x", "use '1x1'"), ("five", "use '1x1'"), ("5x3x2", "use '1x1'"),
    ("0x3", "temporal clips N must be at least 1"), ("5x0", "spatial crops S must be at least 1"),
    ("uniform:0", "clip count C must be at least 1"), ("uniform:", "uniform needs a clip count"),
    ("random:4", "random needs a clip count and a non-negative integer seed"),
    ("random:4:-1", "non-negative integer seed"), ("random:0:3", "clip count C must be at least 1"),
    ("100x100", "more than"),
])
def test_bad_protocol_strings(text, words):
    with pytest.raises(ConfigError) as err:
        parse_protocol(text)
    msg = str(err.value)
    assert words in msg and repr(text) in msg and "\n" not in msg


def test_5x3_golden_on_100_frames_128x96():
    specs = plan_clips("5x3", num_frames=100, height=96, width=128, clip_len=8, stride=2)
    assert len(specs) == 15
    # windows span 15 frames; starts = round(i * 85 / 4) with halves up: 0, 21, 43, 64, 85
    starts = [0, 21, 43, 64, 85]
    crops = [(0, 0, 96, 96), (16, 0, 112, 96), (32, 0, 128, 96)]  # 96-pixel squares left/centre/right
    for c, spec in enumerate(specs):
        t, s = divmod(c, 3)
        assert (spec.temporal_index, spec.spatial_index) == (t, s)
        assert spec.frame_indices == list(range(starts[t], starts[t] + 15, 2))
        assert spec.crop == crops[s]
    expected = np.array([[x0 / 128, y0 / 96, st / 100, x1 / 128, y1 / 96, (st + 15) / 100]
                         for st in starts for (x0, y0, x1, y1) in crops], dtype=np.float32)
    np.testing.assert_array_equal(boxes(specs), expected)
    assert boxes(specs)[-1, 5] == 1.0 and boxes(specs)[0, 2] == 0.0  # first at 0, last at the end


def test_portrait_crops_move_vertically_and_hint_shrinks_them():
    specs = plan_clips("2x3", num_frames=40, height=128, width=96, clip_len=4, stride=1)
    assert [s.crop for s in specs[:3]] == [(0, 0, 96, 96), (0, 16, 96, 112), (0, 32, 96, 128)]
    assert [s.frame_indices[0] for s in specs[::3]] == [0, 36]
    hinted = plan_clips("1x3", num_frames=40, height=96, width=128, clip_len=4, crop_size_hint=0.875)
    # side round(96 * 0.875) = 84, centred vertically at (96 - 84) // 2 = 6, along x at 0, 22, 44
    assert [s.crop for s in hinted] == [(0, 6, 84, 90), (22, 6, 106, 90), (44, 6, 128, 90)]


def test_1x1_and_uniform_are_centred_and_spread():
    (one,) = plan_clips("1x1", num_frames=100, height=96, width=128, clip_len=8, stride=2)
    assert one.frame_indices[0] == 42 and one.crop == (16, 0, 112, 96)  # (100 - 15) // 2
    uni = plan_clips("uniform:4", num_frames=100, height=96, width=128, clip_len=8, stride=2)
    grid = plan_clips("4x1", num_frames=100, height=96, width=128, clip_len=8, stride=2)
    assert [s.frame_indices for s in uni] == [s.frame_indices for s in grid]
    assert [s.frame_indices[0] for s in uni] == [0, 28, 57, 85]  # round(i * 85 / 3)


def test_short_video_repeats_frames_and_box_shows_real_span():
    specs = plan_clips("5x3", num_frames=10, height=96, width=128, clip_len=8, stride=2)
    assert len(specs) == 15  # never dropped
    for s in specs:
        assert s.frame_indices == [0, 1, 3, 4, 5, 6, 8, 9]  # round(k * 9 / 7): spread over the video
        assert (s.box[2], s.box[5]) == (0.0, 1.0)
    (tiny,) = plan_clips("1x1", num_frames=5, height=48, width=64, clip_len=16, stride=4)
    assert len(tiny.frame_indices) == 16 and sorted(set(tiny.frame_indices)) == [0, 1, 2, 3, 4]
    assert tiny.frame_indices == sorted(tiny.frame_indices)
    assert (tiny.box[2], tiny.box[5]) == (0.0, 1.0)
    (single,) = plan_clips("1x1", num_frames=1, height=48, width=64, clip_len=4)
    assert single.frame_indices == [0, 0, 0, 0] and single.box[2:6:3] == (0.0, 1.0)
    # exactly one span long: one real window, no repetition
    (exact,) = plan_clips("1x1", num_frames=15, height=48, width=64, clip_len=8, stride=2)
    assert exact.frame_indices == list(range(0, 15, 2)) and exact.box[5] == 1.0


def _check_random(specs, num_frames, height, width, clip_len, stride):
    span = (clip_len - 1) * stride + 1
    for s in specs:
        x0, y0, x1, y1 = s.crop
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        area = (x1 - x0) * (y1 - y0) / (height * width)
        assert RANDOM_SCALE[0] * 0.9 <= area <= RANDOM_SCALE[1]
        assert RANDOM_RATIO[0] * 0.9 <= (x1 - x0) / (y1 - y0) <= RANDOM_RATIO[1] * 1.1
        assert 0 <= s.frame_indices[0] <= num_frames - span
        assert np.all(np.diff(s.frame_indices) == stride)
        assert s.box == pytest.approx((x0 / width, y0 / height, s.frame_indices[0] / num_frames,
                                       x1 / width, y1 / height, (s.frame_indices[-1] + 1) / num_frames))


def test_random_is_deterministic_per_seed_and_video():
    args = dict(num_frames=300, height=96, width=128, clip_len=8, stride=2)
    a = plan_clips("random:16:3", video_index=7, **args)
    later = [plan_clips("random:16:3", video_index=i, **args) for i in (9, 8, 7)][-1]  # order of videos
    assert a == later and len(a) == 16
    other_video = plan_clips("random:16:3", video_index=8, **args)
    other_seed = plan_clips("random:16:4", video_index=7, **args)
    assert [s.crop for s in a] != [s.crop for s in other_video]
    assert [s.frame_indices for s in a] != [s.frame_indices for s in other_seed]
    _check_random(a + other_video + other_seed, **args)
    # the draws really vary: many distinct starts and crop sizes across a video's clips
    assert len({s.frame_indices[0] for s in a}) > 8 and len({s.crop[2] - s.crop[0] for s in a}) > 8


def test_random_on_short_and_extreme_videos():
    short = plan_clips("random:4:0", num_frames=6, height=48, width=64, clip_len=8, stride=2)
    assert all(s.box[2] == 0.0 and s.box[5] == 1.0 and len(s.frame_indices) == 8 for s in short)
    strip = plan_clips("random:8:0", num_frames=20, height=4, width=400, clip_len=2)
    for s in strip:  # no crop with an allowed aspect fits: the centred fallback still lies inside
        x0, y0, x1, y1 = s.crop
        assert 0 <= x0 < x1 <= 400 and 0 <= y0 < y1 <= 4


def test_frames_needed_decodes_each_frame_once():
    specs = plan_clips("5x3", num_frames=100, height=96, width=128, clip_len=8, stride=2)
    unique, positions = frames_needed(specs)
    assert len(unique) == 5 * 8 and positions.shape == (15, 8)
    assert np.all(np.diff(unique) > 0)
    for c, s in enumerate(specs):
        assert unique[positions[c]].tolist() == s.frame_indices


def test_bad_plan_arguments():
    with pytest.raises(DataError, match="0 frames"):
        plan_clips("1x1", num_frames=0, height=96, width=128, clip_len=8)
    with pytest.raises(ConfigError) as err:
        plan_clips("1x1", num_frames=10, height=96, width=128, clip_len=0, stride=0, crop_size_hint=1.5)
    assert len(err.value.problems) == 3  # every problem at once

def test_a_protocol_object_plans_like_its_name():
    # 1x1 on 10 frames, 4-frame clips at stride 1: the window starts at (10 - 4) // 2 = 3; the crop is
    # the centred 96-pixel square of a 128 x 96 frame; the box divides by width, height, frame count.
    expected = ClipSpec(frame_indices=[3, 4, 5, 6], crop=(16, 0, 112, 96),
                        box=(16 / 128, 0.0, 3 / 10, 112 / 128, 1.0, 7 / 10), temporal_index=0, spatial_index=0)
    assert plan_clips(Protocol("grid", 1), 10, 96, 128, 4) == [expected]
    assert plan_clips("1x1", 10, 96, 128, 4) == [expected]


# ---- V-JEPA evaluation sampling against a re-typed copy of the reference
def _reference_loadvideo_indices(n_frames, num_clips, fpc, fstp, randint):
    """facebookresearch/jepa src/datasets/video_dataset.py `loadvideo_decord`, frame-index part, with
    the frozen eval's settings (allow_clip_overlap=True, random_clip_sampling=True), re-typed."""
    clip_len = int(fpc * fstp)
    partition_len = n_frames // num_clips
    clip_indices = []
    for i in range(num_clips):
        if partition_len > clip_len:
            end_indx = randint(clip_len, partition_len)
            start_indx = end_indx - clip_len
            indices = np.linspace(start_indx, end_indx, num=fpc)
            indices = np.clip(indices, start_indx, end_indx - 1).astype(np.int64)
            indices = indices + i * partition_len
        else:
            sample_len = min(clip_len, n_frames) - 1
            indices = np.linspace(0, sample_len, num=sample_len // fstp)
            indices = np.concatenate((indices, np.ones(fpc - sample_len // fstp) * sample_len,))
            indices = np.clip(indices, 0, sample_len - 1).astype(np.int64)
            clip_step = 0
            if n_frames > clip_len:
                clip_step = (n_frames - clip_len) // (num_clips - 1)
            indices = indices + i * clip_step
        clip_indices.append(indices)
    return clip_indices


def _reference_eval_crops(h, w, num_views, side_len):
    """jepa evals/video_classification_frozen/utils.py `EvalVideoTransform` with get_resize_sizes
    (src/datasets/utils/video/functional.py): crop starts on the resized frame, as boxes
    normalised by the resized frame size (x0, y0, x1, y1)."""
    if w < h:
        ow, oh = side_len, int(side_len * h / w)
    else:
        oh, ow = side_len, int(side_len * w / h)
    spatial_step = (max(oh, ow) - side_len) // (num_views - 1)
    out = []
    for i in range(num_views):
        start = i * spatial_step
        if oh > ow:
            out.append((0.0, start / oh, 1.0, (start + side_len) / oh))
        else:
            out.append((start / ow, 0.0, (start + side_len) / ow, 1.0))
    return out


@pytest.mark.parametrize("n_frames", [300, 250, 120, 64, 40, 7])
@pytest.mark.parametrize("segments,views", [(8, 3), (2, 3)])
@pytest.mark.parametrize("hw", [(240, 320), (272, 640), (320, 240), (144, 176)])
def test_vjepa_protocol_matches_reference_eval_sampling(n_frames, segments, views, hw):
    from vidcache.extract.sampling import plan_clips

    h, w = hw
    specs = plan_clips(f"vjepa:{segments}x{views}:5", n_frames, h, w, clip_len=16, stride=4, video_index=3,
                       size=224)
    assert len(specs) == segments * views
    rng = np.random.default_rng([5, 3])  # the same generator stands in for the reference's np.random.randint
    ref = _reference_loadvideo_indices(n_frames, segments, 16, 4, lambda a, b: int(rng.integers(a, b)))
    ref = [[int(i) % n_frames for i in r] for r in ref]
    crops = _reference_eval_crops(h, w, views, 224)
    for c, spec in enumerate(specs):
        t, s = divmod(c, views)  # temporal-major
        assert spec.frame_indices == ref[t]
        x0, y0, _, x1, y1, _ = spec.box
        rx0, ry0, rx1, ry1 = crops[s]
        # the same square, cut from the original frame to the nearest pixel
        assert abs(x0 - rx0) * w <= 0.5 + 1e-6 and abs(y0 - ry0) * h <= 0.5 + 1e-6
        assert spec.crop[2] - spec.crop[0] == spec.crop[3] - spec.crop[1] == min(h, w)


def test_vjepa_protocol_names_and_single_view():
    from vidcache.extract.sampling import parse_protocol, plan_clips

    assert str(parse_protocol("vjepa:8x3")) == "vjepa:8x3:0" and parse_protocol("vjepa:2x3:7").seed == 7
    with pytest.raises(ConfigError, match="vjepa needs"):
        parse_protocol("vjepa:8")
    # one view: jepa's VideoTransform eval, centre 224 of the 256 short side
    (spec,) = plan_clips("vjepa:1x1", 100, 256, 320, clip_len=16, stride=4, size=224)
    assert spec.crop == (48, 16, 272, 240)
    # the seed decides the windows; the video index too
    a = plan_clips("vjepa:2x1:0", 300, 64, 64, 16, 4, video_index=0)
    b = plan_clips("vjepa:2x1:0", 300, 64, 64, 16, 4, video_index=1)
    assert a[0].frame_indices != b[0].frame_indices or a[1].frame_indices != b[1].frame_indices


def test_vjepa_aug_views_redraw_windows_and_crops_per_view():
    """K views of T segments, clip t * K + k; each view redraws jepa's random windows, each clip its own
    RandomResizedCrop with scale (0.08, 1) and ratio (3/4, 4/3); seeded by (seed, video)."""
    from vidcache.extract.sampling import parse_protocol, plan_clips, vjepa_frame_indices

    p = parse_protocol("vjepa-aug:4x3:2")
    assert (p.kind, p.num_clips, str(p), p.scale) == ("vjepa_aug", 12, "vjepa-aug:4x3:2", (0.08, 1.0))
    specs = plan_clips(p, 400, 240, 320, clip_len=16, stride=4, video_index=5)
    assert [(s.temporal_index, s.spatial_index) for s in specs[:4]] == [(0, 0), (0, 1), (0, 2), (1, 0)]
    rng = np.random.default_rng([2, 5])
    views = [vjepa_frame_indices(400, 4, 16, 4, rng) for _ in range(3)]
    for c, s in enumerate(specs):
        t, k = divmod(c, 3)
        assert s.frame_indices == views[k][t]
        x0, y0, x1, y1 = s.crop
        area = (x1 - x0) * (y1 - y0) / (240 * 320)
        assert 0.08 - 0.01 <= area <= 1.0 and 0.74 <= (x1 - x0) / (y1 - y0) <= 1.34
    assert len({s.crop for s in specs}) == 12  # every clip its own crop
    assert plan_clips(p, 400, 240, 320, 16, 4, video_index=5) == specs
    assert plan_clips(p, 400, 240, 320, 16, 4, video_index=6) != specs
