"""Training loop: resume equals an uninterrupted run, 2-rank DDP equals 1 rank, checkpoints load with
weights_only and as `vidcache:` backbones and record the training FLOPs. (The V-JEPA model and its EMA:
test_vjepa.py.)"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from vidcache.errors import ConfigError
from vidcache.models import create_backbone
from vidcache.pretrain import PretrainConfig, pretrain

REPO = Path(__file__).resolve().parents[2]


def tiny_cfg(codes, out, **kw):
    """A vit_micro run on 32 px clips of 4 frames: 4 x 4 x 2 tokens, a 2-block predictor."""
    base = dict(codes=codes, out=str(out), model="vit_micro", num_frames=4, frame_stride=2, patch_size=8,
                tubelet_size=2, pred_depth=2, pred_dim=48, steps=4, batch_size=4, workers=0, checkpoint_every=2,
                log_every=1, device="cpu", lr=1e-3, start_lr=1e-3, warmup=0.0)
    base.update(kw)
    return PretrainConfig(**base)


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses(run):
    return [json.loads(line)["loss"] for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def _assert_same_state(a, b, exact=True, atol=0.0):
    for key in ("encoder", "target_encoder", "predictor"):
        for name, t in a[key].items():
            if exact:
                assert torch.equal(t, b[key][name]), f"{key}.{name}"
            else:
                torch.testing.assert_close(t, b[key][name], rtol=0, atol=atol, msg=f"{key}.{name}")


def test_resume_continues_exactly_and_checkpoints_are_backbones(code_store, tmp_path):
    codes = code_store[0]
    full = pretrain(tiny_cfg(codes, tmp_path / "full"))
    assert full["step"] == 4 and sorted(p.name for p in (tmp_path / "full").glob("ckpt_*.pt")) == [
        "ckpt_000000.pt", "ckpt_000002.pt", "ckpt_000004.pt"]
    assert (tmp_path / "full" / "loss.png").stat().st_size > 0
    assert json.loads((tmp_path / "full" / "config.json").read_text())["model"] == "vit_micro"

    part = pretrain(tiny_cfg(codes, tmp_path / "part", stop_at=3))  # stops at 3: checkpoint at 2 and 3
    assert part["step"] == 3
    os.remove(tmp_path / "part" / "ckpt_000003.pt")  # as if killed between checkpoints 2 and 4
    resumed = pretrain(tiny_cfg(codes, tmp_path / "part"))
    assert resumed["resumed_from"].endswith("ckpt_000002.pt") and resumed["step"] == 4
    assert _losses(tmp_path / "part") == _losses(tmp_path / "full")  # the curve continues exactly
    a = torch.load(tmp_path / "full" / "ckpt_000004.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "ckpt_000004.pt", weights_only=True)
    _assert_same_state(a, b)
    assert full["pretrain_flops"] == resumed["pretrain_flops"] == a["pretrain_flops"] == b["pretrain_flops"] > 0
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(a["encoder"]["blocks.0.attn.qkv.weight"], a["target_encoder"]["blocks.0.attn.qkv.weight"])

    # The checkpoint is a `vidcache:` backbone: its features are the target encoder's.
    bb = create_backbone(f"vidcache:{tmp_path / 'full' / 'ckpt_000004.pt'}")
    assert (bb.embed_dim, bb.num_frames, bb.image_size, bb.frame_stride) == (96, 4, 32, 2)
    assert tuple(bb.mean) == pytest.approx((0.485, 0.456, 0.406))
    from vidcache.models.vit import VisionTransformer

    ref = VisionTransformer(**a["model_config"])
    ref.load_state_dict(a["target_encoder"])
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(bb.eval().forward_features(x), ref.eval()(x))

    # Resuming with settings that change the result is refused, naming the field.
    with pytest.raises(ConfigError, match="seed"):
        pretrain(tiny_cfg(codes, tmp_path / "part", seed=1, steps=6))


def test_killed_run_resumes_to_the_same_parameters(code_store, tmp_path, kill_after_checkpoint):
    """SIGKILL a CLI-less run once its first checkpoint exists; the rerun ends where an uninterrupted run ends,
    with the same training FLOPs in every checkpoint."""
    codes = code_store[0]
    pretrain(tiny_cfg(codes, tmp_path / "full", steps=6, checkpoint_every=3))
    kill_after_checkpoint(tiny_cfg(codes, tmp_path / "killed", steps=6, checkpoint_every=3), "ckpt_000003.pt")
    pretrain(tiny_cfg(codes, tmp_path / "killed", steps=6, checkpoint_every=3))
    a = torch.load(tmp_path / "full" / "ckpt_000006.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "ckpt_000006.pt", weights_only=True)
    _assert_same_state(a, b)
    assert _losses(tmp_path / "killed") == _losses(tmp_path / "full")
    flops = [torch.load(tmp_path / "full" / f"ckpt_00000{s}.pt", weights_only=True)["pretrain_flops"]
             for s in (0, 3)]
    assert flops[0] == 0 < flops[1] < a["pretrain_flops"] == b["pretrain_flops"]


def test_two_rank_ddp_takes_the_same_steps_as_one_process(code_store, tmp_path):
    codes = code_store[0]
    single = tmp_path / "single"
    pretrain(tiny_cfg(codes, single, steps=2, checkpoint_every=2))
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(f"""
        import torch
        torch.set_num_threads(1)
        from vidcache.pretrain import PretrainConfig, pretrain
        pretrain(PretrainConfig(**{tiny_cfg(codes, tmp_path / 'ddp', steps=2, checkpoint_every=2).__dict__!r}))
    """))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
                        str(script)], env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    torch.testing.assert_close(torch.tensor(_losses(tmp_path / "ddp")), torch.tensor(_losses(single)),
                               rtol=1e-5, atol=1e-6)
    a = torch.load(single / "ckpt_000002.pt", weights_only=True)
    b = torch.load(tmp_path / "ddp" / "ckpt_000002.pt", weights_only=True)
    # Gradients are averaged in another order across ranks; Adam's first steps move every weight by
    # about lr, so a flipped sign of a near-zero gradient would show as a difference of 2 * lr.
    _assert_same_state(a, b, exact=False, atol=1e-5)
    assert a["pretrain_flops"] == b["pretrain_flops"] > 0  # the ranks' counts add up to one process's


def test_mp4_loader_trains_the_same_model(code_store, tmp_path):
    out = pretrain(tiny_cfg(code_store[0], tmp_path / "mp4", steps=1, loader="mp4"))
    assert out["step"] == 1 and out["last_loss"] > 0


def test_config_reports_every_problem():
    cfg = PretrainConfig(codes="", out="", model="vit_nano", num_frames=5, tubelet_size=2, loader="webm",
                         crop_scale=(0.0, 1.0))
    with pytest.raises(ConfigError) as err:
        from vidcache.config import check

        check(cfg)
    text = str(err.value)
    for word in ("codes is required", "out is required", "vit_nano", "tubelet_size", "loader", "crop_scale"):
        assert word in text


def test_pretrain_flops_are_every_steps_forward_and_backward(code_store, tmp_path):
    """The checkpoint's FLOPs equal a re-count of each step on a fresh model: the masks of each step
    (their lengths vary) under the counter, forward and backward."""
    from vidcache.models.flops import flop_counter
    from vidcache.pretrain.train import Trainer

    cfg = tiny_cfg(code_store[0], tmp_path / "run", steps=5, checkpoint_every=5)
    pretrain(cfg)
    recorded = torch.load(tmp_path / "run" / "ckpt_000005.pt", weights_only=True)["pretrain_flops"]
    trainer = Trainer(cfg, torch.device("cpu"))
    video = torch.zeros(cfg.batch_size, 3, cfg.num_frames, trainer.image_size, trainer.image_size)
    expected, lengths = 0, set()
    for step in range(cfg.steps):
        inputs = trainer.objective.inputs(step)
        lengths.add(tuple(m.shape[1] for m in inputs["masks_enc"] + inputs["masks_pred"]))
        counter = flop_counter()
        with counter:
            trainer.model(video, **inputs).backward()
        expected += counter.get_total_flops()
    assert len(lengths) > 1  # the count follows the masks, not the first step's shapes
    assert recorded == expected
