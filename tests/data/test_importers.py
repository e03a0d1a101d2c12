import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from vidcache.data.importers import (
    IMPORTERS,
    MissingVideosWarning,
    import_manifest,
    kinetics_filename,
    manifest_from_folders,
    manifest_from_hmdb51,
    manifest_from_kinetics,
    manifest_from_ssv2,
    manifest_from_ucf101,
    ssv2_class,
    stratified_split,
)
from vidcache.data.manifest import read_manifest
from vidcache.errors import DataError


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00")
    return path


def rel(manifest, root):
    return [str(Path(p).relative_to(root)) for p in manifest.paths]


# ------------------------------------------------------------------------------------------ folders


def make_tree(root: Path, sizes: dict[str, int]) -> None:
    for cls, n in sizes.items():
        for i in range(n):
            touch(root / cls / f"{cls}_{i:02d}.mp4")


def test_folders_random_split_is_stratified_and_deterministic(tmp_path):
    make_tree(tmp_path, {"walk": 5, "run": 10})
    touch(tmp_path / "run" / "notes.txt")
    touch(tmp_path / "run" / ".hidden.mp4")
    touch(tmp_path / "walk" / "more" / "deep.MKV")  # nested, upper-case extension
    m = manifest_from_folders(tmp_path, val_fraction=0.2, test_fraction=0.2, seed=3)
    assert m.classes == ["run", "walk"]
    assert len(m) == 16
    assert rel(m, tmp_path)[:2] == ["run/run_00.mp4", "run/run_01.mp4"]
    assert rel(m, tmp_path)[-1] == "walk/walk_04.mp4"
    assert "walk/more/deep.MKV" in rel(m, tmp_path)
    per = Counter((m.classes[y], s) for y, s in zip(m.labels.tolist(), m.splits))
    assert per == {("run", "train"): 6, ("run", "val"): 2, ("run", "test"): 2,
                   ("walk", "train"): 4, ("walk", "val"): 1, ("walk", "test"): 1}
    again = manifest_from_folders(tmp_path, val_fraction=0.2, test_fraction=0.2, seed=3)
    assert again.splits == m.splits and again.paths == m.paths
    other = manifest_from_folders(tmp_path, val_fraction=0.2, test_fraction=0.2, seed=4)
    assert other.splits != m.splits


def test_folders_split_of_a_class_ignores_other_classes(tmp_path):
    make_tree(tmp_path, {"walk": 8, "run": 8})
    before = manifest_from_folders(tmp_path, seed=0, val_fraction=0.25, test_fraction=0.25)
    make_tree(tmp_path, {"jump": 8})
    after = manifest_from_folders(tmp_path, seed=0, val_fraction=0.25, test_fraction=0.25)
    split_of = lambda m: {p: s for p, s in zip(m.paths, m.splits)}  # noqa: E731
    a = split_of(after)
    assert all(a[p] == s for p, s in split_of(before).items())
    assert after.classes == ["jump", "run", "walk"]


def test_folders_predefined_splits(tmp_path):
    touch(tmp_path / "train" / "b" / "1.avi")
    touch(tmp_path / "train" / "a" / "2.webm")
    touch(tmp_path / "validation" / "a" / "3.mp4")
    touch(tmp_path / "test" / "c" / "4.mov")
    m = manifest_from_folders(tmp_path, val_fraction=0.5)  # fractions are ignored
    assert m.classes == ["a", "b", "c"]
    assert rel(m, tmp_path) == ["train/a/2.webm", "train/b/1.avi", "validation/a/3.mp4", "test/c/4.mov"]
    assert m.labels.tolist() == [0, 1, 0, 2]
    assert m.splits == ["train", "train", "val", "test"]


def test_folders_failures(tmp_path):
    with pytest.raises(DataError, match="not found"):
        manifest_from_folders(tmp_path / "nope")
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DataError, match="no videos"):
        manifest_from_folders(tmp_path)
    make_tree(tmp_path, {"x": 3})
    with pytest.raises(DataError, match="val_fraction"):
        manifest_from_folders(tmp_path, val_fraction=0.6, test_fraction=0.5)


def test_stratified_split_small_classes_keep_a_training_video():
    s = stratified_split([0, 0, 1, 1, 1, 2], 0.5, 0.5 - 1e-9, seed=0)
    per = Counter(zip([0, 0, 1, 1, 1, 2], s))
    assert per[(0, "train")] >= 1 and per[(1, "train")] >= 1 and per[(2, "train")] == 1
    assert per[(1, "val")] == 1 and per[(1, "test")] == 1


def test_manifest_round_trip(tmp_path):
    make_tree(tmp_path / "videos", {"walk": 4, "run": 4})
    m = manifest_from_folders(tmp_path / "videos", seed=1)
    back = read_manifest(m.write(tmp_path / "manifest.csv"))
    assert back.paths == [str(Path(p).resolve()) for p in m.paths]
    assert back.labels.tolist() == m.labels.tolist() and back.splits == m.splits
    assert back.classes == m.classes


# ------------------------------------------------------------------------------------------ UCF101

UCF_CLASSIND = "1 ApplyEyeMakeup\n2 Archery\n3 HandstandPushups\n"
UCF_TRAIN = """ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1
ApplyEyeMakeup/v_ApplyEyeMakeup_g09_c02.avi 1
ApplyEyeMakeup/v_ApplyEyeMakeup_g10_c01.avi 1
Archery/v_Archery_g08_c03.avi 2
Archery/v_Archery_g09_c01.avi 2
Archery/v_Archery_g10_c05.avi 2
HandstandPushups/v_HandStandPushups_g08_c01.avi 3
HandstandPushups/v_HandStandPushups_g09_c02.avi 3
HandstandPushups/v_HandStandPushups_g10_c04.avi 3
"""
UCF_TEST = """ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi
Archery/v_Archery_g02_c01.avi
HandStandPushups/v_HandStandPushups_g01_c01.avi
"""


def write_ucf(tmp_path, fold=1):
    split_dir = tmp_path / "ucfTrainTestlist"
    split_dir.mkdir()
    (split_dir / "classInd.txt").write_text(UCF_CLASSIND)
    (split_dir / f"trainlist0{fold}.txt").write_text(UCF_TRAIN.replace("\n", "\r\n"))  # the files ship CRLF
    (split_dir / f"testlist0{fold}.txt").write_text(UCF_TEST)
    root = tmp_path / "UCF-101"
    for line in (UCF_TRAIN + UCF_TEST).split():
        if line.endswith(".avi"):
            touch(root / line)
    return root, split_dir


def test_ucf101_exact_manifest(tmp_path):
    root, split_dir = write_ucf(tmp_path)
    m = manifest_from_ucf101(root, split_dir, fold=1)
    assert m.classes == ["ApplyEyeMakeup", "Archery", "HandstandPushups"]
    assert rel(m, root) == [line.split()[0] for line in UCF_TRAIN.splitlines()] + UCF_TEST.split()
    assert m.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 1, 2]
    assert m.splits == ["train"] * 9 + ["test"] * 3


def test_ucf101_val_by_groups(tmp_path):
    root, split_dir = write_ucf(tmp_path)
    m = manifest_from_ucf101(root, split_dir, fold=1, val_groups=0.34, seed=5)
    group = lambda p: Path(p).name.split("_g")[1][:2]  # noqa: E731
    by_group = {}
    for p, s in zip(m.paths, m.splits):
        by_group.setdefault(group(p), set()).add(s)
    assert all(len(s) == 1 for s in by_group.values())  # no group straddles two splits
    val_groups = {g for g, s in by_group.items() if s == {"val"}}
    assert len(val_groups) == 1 and val_groups <= {"08", "09", "10"}
    assert Counter(m.splits) == {"train": 6, "val": 3, "test": 3}
    assert sorted(m.labels[np.array(m.splits) == "val"].tolist()) == [0, 1, 2]  # every class in val
    assert manifest_from_ucf101(root, split_dir, fold=1, val_groups=0.34, seed=5).splits == m.splits


def test_ucf101_missing_and_bad_files(tmp_path):
    root, split_dir = write_ucf(tmp_path)
    Path(root / "Archery" / "v_Archery_g09_c01.avi").unlink()
    with pytest.warns(MissingVideosWarning, match="1 of 12"):
        m = manifest_from_ucf101(root, split_dir)
    assert len(m) == 12
    with pytest.raises(DataError, match="fold"):
        manifest_from_ucf101(root, split_dir, fold=4)
    with pytest.raises(DataError, match="trainlist02"):
        manifest_from_ucf101(root, split_dir, fold=2)
    (split_dir / "testlist01.txt").write_text("Bowling/v_Bowling_g01_c01.avi\n")
    with pytest.raises(DataError, match="'Bowling' is not a class"):
        manifest_from_ucf101(root, split_dir)


# ------------------------------------------------------------------------------------------ HMDB51


def test_hmdb51_exact_manifest(tmp_path):
    split_dir = tmp_path / "testTrainMulti_7030_splits"
    split_dir.mkdir()
    # The real files end lines with a trailing space.
    (split_dir / "brush_hair_test_split1.txt").write_text(
        "April_09_brush_hair_u_nm_np1_ba_goo_0.avi 1 \nApril_09_brush_hair_u_nm_np1_ba_goo_1.avi 2 \n"
        "Blonde_being_brushed_brush_hair_f_nm_np2_ri_med_0.avi 0 \n")
    (split_dir / "cartwheel_test_split1.txt").write_text("cart_0.avi 2 \ncart_1.avi 1 \ncart_2.avi 1 \n")
    (split_dir / "brush_hair_test_split2.txt").write_text("April_09_brush_hair_u_nm_np1_ba_goo_0.avi 2 \n")
    (split_dir / "cartwheel_test_split2.txt").write_text("cart_0.avi 1 \n")
    root = tmp_path / "hmdb51"
    with pytest.warns(MissingVideosWarning, match="4 of 5"):
        touch(root / "cartwheel" / "cart_0.avi")
        m = manifest_from_hmdb51(root, split_dir, fold=1)
    assert m.classes == ["brush_hair", "cartwheel"]
    assert rel(m, root) == ["brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi",
                            "brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_1.avi",
                            "cartwheel/cart_0.avi", "cartwheel/cart_1.avi", "cartwheel/cart_2.avi"]
    assert m.labels.tolist() == [0, 0, 1, 1, 1]
    assert m.splits == ["train", "test", "test", "train", "train"]
    with pytest.warns(MissingVideosWarning):
        m2 = manifest_from_hmdb51(root, split_dir, fold=2)
    assert m2.splits == ["test", "train"]
    with pytest.warns(MissingVideosWarning):
        carved = manifest_from_hmdb51(root, split_dir, fold=1, val_fraction=0.5, seed=0)
    assert Counter(carved.splits) == {"train": 2, "test": 2, "val": 1}  # cartwheel's two train videos
    with pytest.raises(DataError, match="_test_split3.txt"):
        manifest_from_hmdb51(root, split_dir, fold=3)
    (split_dir / "cartwheel_test_split1.txt").write_text("cart_0.avi 7\n")
    with pytest.raises(DataError, match="0\\|1\\|2"):
        manifest_from_hmdb51(root, split_dir, fold=1)


# ------------------------------------------------------------------------------------------ Kinetics

K_CSV = """label,youtube_id,time_start,time_end,split
"air drumming",--nQbRBEz2s,104,114,train
abseiling,-3B32lodo2M,59,69,train
abseiling,0347ZoDXyP0,13,23,validate
"air drumming",zzz_yt_1,0,10,test
"""


def test_kinetics_layouts_splits_and_missing(tmp_path):
    (tmp_path / "train.csv").write_text(K_CSV)
    root = tmp_path / "k400"
    assert kinetics_filename("-3B32lodo2M", 59, 69) == "-3B32lodo2M_000059_000069.mp4"
    a = touch(root / "air drumming" / "--nQbRBEz2s_000104_000114.mp4")   # label folder as written
    b = touch(root / "abseiling" / "-3B32lodo2M_000059_000069.mp4")
    c = touch(root / "0347ZoDXyP0_000013_000023.mp4")                      # flat layout
    with pytest.warns(MissingVideosWarning, match="1 of 4"):
        m = manifest_from_kinetics(root, tmp_path / "train.csv")
    assert m.classes == ["abseiling", "air drumming"]
    assert m.paths[:3] == [str(a), str(b), str(c)]
    assert m.paths[3] == str(root / "air drumming" / "zzz_yt_1_000000_000010.mp4")  # kept although missing
    assert m.labels.tolist() == [1, 0, 0, 1]
    assert m.splits == ["train", "train", "val", "test"]

    touch(root / "air_drumming" / "zzz_yt_1_000000_000010.mp4")  # underscore folder layout
    m = manifest_from_kinetics(root, tmp_path / "train.csv", split_name="test")
    assert m.paths[3] == str(root / "air_drumming" / "zzz_yt_1_000000_000010.mp4")
    assert m.splits == ["test"] * 4


def test_kinetics_unlabelled_and_bad_csv(tmp_path):
    (tmp_path / "test.csv").write_text("youtube_id,time_start,time_end,split\nabc,1,11,test\n")
    (tmp_path / "train.csv").write_text(K_CSV)
    with pytest.warns(MissingVideosWarning):
        m = manifest_from_kinetics(tmp_path, [tmp_path / "train.csv", tmp_path / "test.csv"])
    assert m.labels.tolist() == [1, 0, 0, 1, -1] and m.splits[-1] == "test"
    assert m.paths[-1] == str(tmp_path / "abc_000001_000011.mp4")
    (tmp_path / "bad.csv").write_text("label,youtube_id,time_start,time_end,split\nx,y,1,2,holdout\n")
    with pytest.raises(DataError, match="unknown split 'holdout'"):
        manifest_from_kinetics(tmp_path, tmp_path / "bad.csv")
    (tmp_path / "nosplit.csv").write_text("label,youtube_id,time_start,time_end\nx,y,1,2\n")
    with pytest.raises(DataError, match="split_name"):
        manifest_from_kinetics(tmp_path, tmp_path / "nosplit.csv")
    with pytest.warns(MissingVideosWarning):
        assert manifest_from_kinetics(tmp_path, tmp_path / "nosplit.csv", split_name="val").splits == ["val"]


# ------------------------------------------------------------------------------------------ SSv2

SSV2_LABELS = {"Approaching something with your camera": "0", "Holding something": "1",
               "Putting something onto something": "2"}
SSV2_TRAIN = [
    {"id": "78687", "label": "holding potato next to vicks vaporub bottle", "template": "Holding [something]",
     "placeholders": ["potato"]},
    {"id": "42326", "label": "approaching a cup with your camera",
     "template": "Approaching [something] with your camera", "placeholders": ["a cup"]},
    {"id": "100904", "label": "putting a book onto a box", "template": "Putting [something] onto [something]",
     "placeholders": ["a book", "a box"]},
    {"id": "11", "label": "holding a pen", "template": "Holding [something]", "placeholders": ["a pen"]},
    {"id": "12", "label": "holding a cup", "template": "Holding [something]", "placeholders": ["a cup"]},
    {"id": "13", "label": "holding a key", "template": "Holding [Something]", "placeholders": ["a key"]},
]
SSV2_VAL = [{"id": "74225", "label": "holding a mug", "template": "Holding [something]", "placeholders": ["a mug"]}]
SSV2_TEST = [{"id": "1420"}, {"id": "1421"}]


def write_ssv2(tmp_path):
    paths = {}
    for name, data in (("labels", SSV2_LABELS), ("train", SSV2_TRAIN), ("validation", SSV2_VAL),
                       ("test", SSV2_TEST)):
        paths[name] = tmp_path / f"something-something-v2-{name}.json"
        paths[name].write_text(json.dumps(data))
    return paths


def test_ssv2_default_reports_official_val_as_test(tmp_path):
    p = write_ssv2(tmp_path)
    root = tmp_path / "20bn-something-something-v2"
    assert ssv2_class("Putting [something] onto [something]") == "Putting something onto something"
    with pytest.warns(MissingVideosWarning, match="7 of 7"):
        m = manifest_from_ssv2(root, p["labels"], p["train"], p["validation"], val_fraction=0.25, seed=0)
    assert m.classes == list(SSV2_LABELS)
    assert rel(m, root) == ["78687.webm", "42326.webm", "100904.webm", "11.webm", "12.webm", "13.webm", "74225.webm"]
    assert m.labels.tolist() == [1, 0, 2, 1, 1, 1, 1]
    assert m.splits[-1] == "test"
    # val carved from train, per class: only "Holding" (4 videos) is big enough to give one away.
    val = [i for i, s in enumerate(m.splits) if s == "val"]
    assert len(val) == 1 and m.labels[val[0]] == 1
    assert m.splits[1] == "train" and m.splits[2] == "train"
    with pytest.raises(DataError, match="unlabelled"):
        manifest_from_ssv2(root, p["labels"], p["train"], p["validation"], p["test"])


def test_ssv2_official_names_and_errors(tmp_path):
    p = write_ssv2(tmp_path)
    with pytest.warns(MissingVideosWarning):
        m = manifest_from_ssv2(tmp_path, p["labels"], p["train"], p["validation"], p["test"], official_val_as="val")
    assert m.splits == ["train"] * 6 + ["val", "test", "test"]
    assert m.labels.tolist()[-3:] == [1, -1, -1]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"id": "5", "template": "Dropping [something]"}]))
    with pytest.raises(DataError, match="'Dropping something' not in labels json"):
        manifest_from_ssv2(tmp_path, p["labels"], bad, p["validation"])
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        manifest_from_ssv2(tmp_path, p["labels"], bad, p["validation"])


def test_import_manifest_dispatch(tmp_path):
    make_tree(tmp_path, {"a": 3, "b": 3})
    assert import_manifest("folders", tmp_path, seed=0).classes == ["a", "b"]
    with pytest.raises(DataError, match="unknown manifest format 'youtube'"):
        import_manifest("youtube", tmp_path)


# ------------------------------------------------------------------------------------------ the CLI
def _cli(capsys, *argv):
    from vidcache.cli import main

    with pytest.raises(SystemExit) as e:
        main(list(map(str, argv)))
    captured = capsys.readouterr()
    return e.value.code, captured.out, captured.err


def _needed_argv(imp, tmp_path) -> list:
    argv = []
    for option in imp.needs:
        path = tmp_path / f"{option}.txt"
        path.write_text("x")
        argv += [f"--{option.replace('_', '-')}", path]
    return argv


@pytest.mark.parametrize("name", list(IMPORTERS))
def test_every_registered_importer_is_reachable_from_the_cli(capsys, tmp_path, monkeypatch, name):
    """`data manifest --format NAME` runs NAME's function with the keywords its registry entry maps."""
    import inspect

    from vidcache.data.config import Importer
    from vidcache.data.manifest import Manifest

    imp = IMPORTERS[name]
    real = imp.load()
    calls = []

    def recorder(root, **kwargs):
        inspect.signature(real).bind(root, **kwargs)  # the real importer takes exactly these arguments
        calls.append((root, kwargs))
        return Manifest([str(tmp_path / "a.mp4")], [0], ["train"], ["a"])

    monkeypatch.setattr(Importer, "load", lambda self: recorder if self is imp else real)
    (tmp_path / "root").mkdir()
    code, out, err = _cli(capsys, "data", "manifest", tmp_path / "root", "-o", tmp_path / "m.csv", "--format", name,
                          *_needed_argv(imp, tmp_path))
    assert code == 0, err
    assert "1 videos, 1 classes" in out and (tmp_path / "m.csv").is_file()
    (root, kwargs), = calls
    assert Path(root) == tmp_path / "root" and set(kwargs) == set(imp.options)
    for arg, option in imp.options.items():
        if option == "splits":
            assert kwargs[arg] == (tmp_path / "splits.txt" if imp.splits == "one" else [tmp_path / "splits.txt"])


def test_an_importer_added_to_the_registry_needs_no_cli_change(capsys, tmp_path, monkeypatch):
    from vidcache.data.config import Importer

    monkeypatch.setitem(IMPORTERS, "mine", Importer("vidcache.data.importers:manifest_from_folders", "mine",
                                                    {"seed": "seed"}))
    make_tree(tmp_path / "root", {"a": 2, "b": 2})
    code, out, _ = _cli(capsys, "data", "manifest", tmp_path / "root", "-o", tmp_path / "m.csv", "--format", "mine",
                        "--seed", "1")
    assert code == 0 and "4 videos, 2 classes" in out
    code, _, err = _cli(capsys, "data", "manifest", tmp_path / "root", "-o", tmp_path / "m.csv", "--format", "mine",
                        "--fold", "2")
    assert code == 2 and "--fold is read by --format ucf101 or hmdb51, not mine" in err


@pytest.mark.parametrize("argv, message", [
    (["--format", "youtube"], "unknown manifest format 'youtube'; known: folders, ucf101, hmdb51, kinetics, ssv2, davis"),
    (["--format", "davis", "--seed", "3"], "--seed is read by --format folders, ucf101, hmdb51 or ssv2, not davis"),
    (["--format", "ssv2"], "--format ssv2 needs --labels-json, --train-json and --val-json"),
    (["--format", "kinetics"], "--format kinetics needs --splits"),
])
def test_bad_formats_and_options_exit_2_with_one_line(capsys, tmp_path, argv, message):
    code, out, err = _cli(capsys, "data", "manifest", tmp_path / "missing", "-o", tmp_path / "m.csv", *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "m.csv").exists()
