"""Checkpoints of a plan: steps from names and metadata, formats, globs, content identity."""

from pathlib import Path

from vidcache.evaluate.checkpoints import step_from_name


def test_step_from_file_names():
    assert step_from_name("runs/a/ckpt_000500.pt") == (500, "step")
    assert step_from_name("step=1200.safetensors") == (1200, "step")
    assert step_from_name("model-iter300.pth") == (300, "step")
    assert step_from_name("epoch_3.pt") == (3, "epoch")
    assert step_from_name("jepa-ep25.pth.tar") == (25, "epoch")
    assert step_from_name("jepa-40.pth.tar") == (40, "step")
    assert step_from_name("vitl16-40.pth.tar") == (None, "")  # two bare numbers: ambiguous
    assert step_from_name("latest.pt") == (None, "")


def test_globs_expand_in_step_order_and_skip_writers_temp_files(tmp_path, save_tiny):
    from vidcache.evaluate.checkpoints import CheckpointSpec, expand

    for step in (1000, 20, 300):
        save_tiny(tmp_path / "run" / f"ckpt_{step}.pt", seed=step, step=step)
    (tmp_path / "run" / ".ckpt_400.pt.tmp").write_bytes(b"half")
    (tmp_path / "run" / "latest.pt").write_bytes((tmp_path / "run" / "ckpt_20.pt").read_bytes())
    refs = expand(CheckpointSpec(path=str(tmp_path / "run" / "*.pt")))
    assert [Path(r.path).name for r in refs] == ["ckpt_20.pt", "ckpt_300.pt", "ckpt_1000.pt", "latest.pt"]
    assert {r.run for r in refs} == {"run"} and not any(r.trust for r in refs)
    [named] = expand(CheckpointSpec(path=str(tmp_path / "run" / "ckpt_20.pt"), name="baseline",
                                    options={"feature": "cls"}))
    assert named.run == "baseline" and named.label.endswith("ckpt_20.pt(feature=cls)")


def test_step_metadata_beats_the_file_name_and_formats_are_detected(tmp_path, save_tiny):
    import torch

    from vidcache.evaluate.checkpoints import CheckpointRef, detect_format, inspect

    path = save_tiny(tmp_path / "ckpt_000100.pt", seed=0, step=250, pretrain_flops=6 * 10**15)
    ref = CheckpointRef(label=str(path), backbone="auto", options={}, run="r", path=str(path))
    assert inspect(ref) == {"format": "vidcache", "step": [250, "step", "metadata"], "pretrain_flops": 6 * 10**15}
    bare = save_tiny(tmp_path / "epoch_7.pt", seed=0)  # no step entry: the name is read
    info = inspect(CheckpointRef(label="", backbone="auto", options={}, run="r", path=str(bare)))
    assert info["step"] == [7, "epoch", "file name"] and info["pretrain_flops"] is None  # none recorded
    torch.save({"encoder": {}, "epoch": 3}, tmp_path / "jepa-latest.pth.tar")
    assert detect_format(str(tmp_path / "jepa-latest.pth.tar")) == "vjepa"
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    torch.jit.save(scripted, str(tmp_path / "model.pt"))
    assert detect_format(str(tmp_path / "model.pt")) == "torchscript"


def test_identity_is_the_content_name_format_and_options(tmp_path, save_tiny):
    import shutil

    from vidcache.evaluate.checkpoints import CheckpointRef, identity

    a = save_tiny(tmp_path / "a" / "ckpt_1.pt", seed=0, step=1)
    (tmp_path / "b").mkdir()
    b = shutil.copy(a, tmp_path / "b" / "ckpt_1.pt")
    c = shutil.copy(a, tmp_path / "b" / "other.pt")

    def ref(p, **options):
        return CheckpointRef(label=str(p), backbone="auto", options=options, run="r", path=str(p))

    assert identity(ref(a)) == identity(ref(b))  # moved: same store
    assert identity(ref(a)) != identity(ref(c))  # renamed: the name can carry the step
    assert identity(ref(a)) != identity(ref(a, feature="cls"))
    save_tiny(b, seed=1, step=1)  # same name, other weights
    assert identity(ref(a)) != identity(ref(b))
    assert identity(CheckpointRef(label="tiny", backbone="tiny", options={}, run="tiny")) is None
