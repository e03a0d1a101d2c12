"""TDV: every loss term against a re-typed float64 version of the public code, one step's gradients
against a float64 re-computation, resume after SIGKILL, 2-rank DDP, checkpoints as backbones, bad input.

Reference (re-typed below, for parity only): ninaddaithankar/tdv `model/cv/tdv/losses/dino_loss.py`
(DinoLoss), `model/cv/tdv/losses/center_sharp_mse_loss.py` (CenterSharpReconstructionLoss),
`model/cv/tdv/utils.py` (rollout_n_frames, calculate_static_frames_mask),
`model/cv/tdv/tdv.py` (forward_loss_wrapper, calculate_loss_for_backward).
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidcache.errors import ConfigError
from vidcache.models import create_backbone
from vidcache.pretrain.tdv import DINOHead, TDVObjective, build_tdv, rollout
from vidcache.pretrain.tdv_config import TDVConfig
from vidcache.pretrain.train import Trainer, pretrain

REPO = Path(__file__).resolve().parents[2]


def tiny_cfg(codes, out, **kw):
    """vit_micro frame and 1-block motion encoders on 32 px frames (patch 8: 16 tokens), 4-frame contexts."""
    base = dict(codes=codes, out=str(out), model="vit_micro", motion_depth=1, patch_size=8, num_frames=4,
                frame_stride=2, prototypes=32, head_hidden=32, head_bottleneck=16, steps=4, batch_size=4,
                workers=0, checkpoint_every=2, log_every=1, device="cpu", lr=1e-3, warmup=0.0)
    base.update(kw)
    return TDVConfig(**base)


# ----------------------------------------------------------------------------- the public formulas, re-typed

class RefDinoLoss:
    """DinoLoss.forward with use_centering and use_sharpening, token_weights None, float64."""

    def __init__(self, out_dim, student_temp, teacher_temp, center_momentum):
        self.st, self.tt, self.m = student_temp, teacher_temp, center_momentum
        self.center = torch.zeros(1, 1, out_dim, dtype=torch.float64)

    def __call__(self, student_logits, teacher_logits):
        raw = teacher_logits
        t = (teacher_logits - self.center) / self.tt
        s = student_logits / self.st
        loss = -torch.sum(F.softmax(t, dim=-1) * F.log_softmax(s, dim=-1), dim=-1).mean()
        batch_center = raw.mean(dim=tuple(range(raw.ndim - 1))).view_as(self.center)
        self.center = self.center * self.m + batch_center * (1 - self.m)
        return loss


class RefRecon:
    """CenterSharpReconstructionLoss with loss="mse"."""

    def __init__(self, out_dim, predicted_temp=1.0, target_temp=1.0, center_momentum=0.99):
        self.pt, self.tt, self.m = predicted_temp, target_temp, center_momentum
        self.center = torch.zeros(1, 1, out_dim, dtype=torch.float64)

    def __call__(self, predicted, target, use_centering, use_sharpening):
        raw = target
        if use_centering:
            target = target - self.center
        if use_sharpening:
            target, predicted = target / self.tt, predicted / self.pt
        loss = F.mse_loss(predicted, target)
        if use_centering:
            batch_center = raw.mean(dim=tuple(range(raw.ndim - 1))).reshape(1, 1, -1)
            self.center = self.center * self.m + batch_center * (1 - self.m)
        return loss


def ref_rollout(previous, rgb_diff, target, n):
    if n <= 1:
        return previous, rgb_diff, target
    T = previous.shape[1]
    csum = rgb_diff.cumsum(dim=1)
    csum = torch.cat([torch.zeros_like(csum[:, :1]), csum], dim=1)
    return previous[:, :T - n + 1], csum[:, n:] - csum[:, :-n], target[:, n - 1:]


def ref_losses(model, predicted, target, dino, recon, recon_centering=False):
    """calculate_loss_for_backward with the recipe's switches (one head, one centre for DINO and iBOT)."""
    r = recon(predicted, target, use_centering=recon_centering, use_sharpening=recon_centering)
    s_cls, t_cls = model.head(predicted[:, :, 0]), model.teacher_head(target[:, :, 0])
    d = dino(s_cls, t_cls)
    s_p, t_p = model.head(predicted[:, :, 1:]), model.teacher_head(target[:, :, 1:])
    i = dino(s_p, t_p)
    return 1.5 * r + 0.75 * d + 0.75 * i, (r, d, i)


def _tiny_model(**kw):
    return build_tdv("vit_micro", img_size=16, patch_size=8, motion_depth=1, prototypes=12, head_hidden=16,
                     head_bottleneck=8, seed=3, **kw).double()


# ----------------------------------------------------------------------------- parity

def test_head_is_a_weight_normalised_last_layer_on_the_normalised_bottleneck():
    head = DINOHead(10, 7, hidden_dim=12, bottleneck_dim=5, layers=3).double()
    with torch.no_grad():
        head.weight_g.copy_(torch.rand(7, 1, dtype=torch.float64) + 0.5)
    x = torch.randn(4, 10, dtype=torch.float64)
    ref = torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(5, 7, bias=False).double())
    with torch.no_grad():
        ref.parametrizations.weight.original0.copy_(head.weight_g)
        ref.parametrizations.weight.original1.copy_(head.weight_v)
    torch.testing.assert_close(head(x), ref(F.normalize(head.mlp(x), dim=-1)))


@pytest.mark.parametrize("recon_centering", [False, True])
def test_every_loss_term_and_the_centres_equal_the_public_formulas(recon_centering):
    torch.manual_seed(0)
    model = _tiny_model(recon_centering=recon_centering, recon_temps=(0.5, 0.25))
    B, T, N, D = 3, 2, 5, model.frame_encoder.embed_dim
    predicted = torch.randn(B, T, N, D, dtype=torch.float64)
    target = torch.randn(B, T, N, D, dtype=torch.float64) + 0.3
    with torch.no_grad():  # a non-zero starting centre, so centring changes the result
        model.center.copy_(torch.randn(1, 12, dtype=torch.float64) * 0.1)
        model.recon_center.copy_(torch.randn(1, D, dtype=torch.float64) * 0.1)
    dino = RefDinoLoss(12, 0.1, 0.1, 0.9)
    dino.center = model.center.clone().reshape(1, 1, -1)
    recon = RefRecon(D, 0.5, 0.25, 0.99)
    recon.center = model.recon_center.clone().reshape(1, 1, -1)
    keep = torch.ones(B, dtype=torch.float64)
    for _ in range(2):  # the second call uses the centres the first one updated
        loss, metrics = model.losses(predicted, target, keep, keep.sum())
        ref, (r, d, i) = ref_losses(model, predicted, target, dino, recon, recon_centering)
        torch.testing.assert_close(metrics["mse_loss"].double(), r)
        torch.testing.assert_close(metrics["dino_loss"].double(), d)
        torch.testing.assert_close(metrics["ibot_loss"].double(), i)
        torch.testing.assert_close(loss.double(), ref)
        torch.testing.assert_close(model.center.reshape(1, 1, -1).double(), dino.center)
        if recon_centering:
            torch.testing.assert_close(model.recon_center.reshape(1, 1, -1).double(), recon.center)
        else:
            assert not torch.equal(model.recon_center.reshape(1, 1, -1).double(), dino.center)


def test_static_sequences_are_left_out_like_the_reference_mask():
    torch.manual_seed(1)
    model = _tiny_model(static_threshold=0.05)
    video = torch.randn(3, 3, 3, 16, 16, dtype=torch.float64)
    video[1] = video[1, :, :1]  # sequence 1 does not move
    ref_model = _tiny_model()  # same seed, no threshold: evaluated on the moving sequences only
    loss, metrics = model(video)
    mean_diff = (video[:, :, 1:] - video[:, :, :-1]).abs().mean(dim=(1, 2, 3, 4))
    keep = mean_diff > 0.05  # calculate_static_frames_mask
    assert keep.tolist() == [True, False, True] and metrics["kept_sequences"] == 2
    ref_loss, ref_metrics = ref_model(video[keep])
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(model.center, ref_model.center)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_rollout_equals_rollout_n_frames(n):
    g = torch.Generator().manual_seed(n)
    prev, diff, tgt = (torch.randn(2, 4, 3, 5, generator=g, dtype=torch.float64) for _ in range(3))
    for a, b in zip(rollout(prev, diff, tgt, n), ref_rollout(prev, diff, tgt, n)):
        torch.testing.assert_close(a, b)


def _reference_loss(model, video):
    """forward_loss_wrapper, re-typed: frames 0..T-2 through the student, 1..T-1 through the teacher,
    the motion encoder on the RGB difference conditioned on the student's patch tokens (no CLS)."""
    frames = video.transpose(1, 2)
    B, T, C, H, W = frames.shape
    prev = model.frame_encoder(frames[:, :-1].reshape(-1, C, H, W))
    with torch.no_grad():
        tgt = model.teacher_encoder(frames[:, 1:].reshape(-1, C, H, W))
    diff = (frames[:, 1:] - frames[:, :-1]).reshape(-1, C, H, W)
    enc_diff = model.motion_proj(model.motion_encoder(diff, condition=prev[:, 1:]))
    prev, enc_diff, tgt = (x.reshape(B, T - 1, *x.shape[1:]) for x in (prev, enc_diff, tgt))
    pred = prev + enc_diff
    dino = RefDinoLoss(model.center.shape[-1], 0.1, 0.1, 0.9)
    loss, _ = ref_losses(model, pred, tgt, dino, RefRecon(pred.shape[-1]))
    return loss


def test_one_step_gradients_equal_a_float64_recomputation(code_store, tmp_path):
    trainer = Trainer(tiny_cfg(code_store[0], tmp_path / "run", clip_grad=None), torch.device("cpu"))
    batch = next(iter(trainer.loader()))
    video = trainer.video(batch).clone()
    import copy

    ref = copy.deepcopy(trainer.model).double()  # the step-0 model, before the trainer's step
    trainer.train_step(batch)
    loss = _reference_loss(ref, video.double())
    loss.backward()
    named = dict(trainer.model.named_parameters())
    checked = 0
    for name, p in ref.named_parameters():
        if not p.requires_grad:
            continue
        g32 = named[name].grad
        assert g32 is not None, name
        torch.testing.assert_close(g32.double(), p.grad, rtol=1e-3, atol=1e-6, msg=name)
        checked += 1
    assert checked > 50  # frame encoder, motion encoder, projection, head
    assert any(n.startswith("motion_encoder.blocks.0.cross_attn") for n, _ in ref.named_parameters())


def test_optimiser_groups_schedule_and_ema():
    cfg = TDVConfig(codes="c", out="o", steps=100, warmup=0.1, lr=1e-3, final_lr_scale=1e-2)
    obj = SimpleNamespace(cfg=cfg)
    s = [TDVObjective.schedules(obj, k) for k in (0, 5, 10, 55, 100)]
    assert [x["lr"] for x in s] == pytest.approx([0.0, 5e-4, 1e-3, 0.5 * (1e-3 + 1e-5), 1e-5])
    assert {x["wd"] for x in s} == {0.01} and {x["momentum"] for x in s} == {0.990025}
    model = _tiny_model()
    groups = model.param_groups(3e-2)
    assert [g["lr_scale"] for g in groups] == [1.0, 3e-2] and all(g["apply_wd"] for g in groups)
    ids = [{id(p) for p in g["params"]} for g in groups]
    assert ids[1] == {id(p) for p in list(model.motion_encoder.parameters()) + list(model.motion_proj.parameters())
                      if p.requires_grad}
    teacher = {k: v.clone() for k, v in model.teacher_head.state_dict().items()}
    model.update_target(0.9)
    for k, v in model.teacher_head.state_dict().items():
        torch.testing.assert_close(v, 0.9 * teacher[k] + 0.1 * model.head.state_dict()[k])


# ----------------------------------------------------------------------------- runs

def _losses(run):
    return [json.loads(line)["loss"] for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def _same_state(a, b, atol=0.0):
    for key in ("encoder", "target_encoder", "motion_encoder", "motion_proj", "head", "teacher_head", "centers"):
        for name, t in a[key].items():
            if atol:
                torch.testing.assert_close(t, b[key][name], rtol=0, atol=atol, msg=f"{key}.{name}")
            else:
                assert torch.equal(t, b[key][name]), f"{key}.{name}"


def test_killed_run_resumes_to_the_same_checkpoint(code_store, tmp_path, kill_after_checkpoint):
    codes = code_store[0]
    pretrain(tiny_cfg(codes, tmp_path / "full", steps=6, checkpoint_every=3))
    kill_after_checkpoint(tiny_cfg(codes, tmp_path / "killed", steps=6, checkpoint_every=3), "ckpt_000003.pt")
    resumed = pretrain(tiny_cfg(codes, tmp_path / "killed", steps=6, checkpoint_every=3))
    assert resumed["step"] == 6
    a = torch.load(tmp_path / "full" / "ckpt_000006.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "ckpt_000006.pt", weights_only=True)
    # Every TDV step has the same shapes, so the FLOPs grow linearly with the step, and resume keeps them.
    half = torch.load(tmp_path / "killed" / "ckpt_000003.pt", weights_only=True)["pretrain_flops"]
    assert a["pretrain_flops"] == b["pretrain_flops"] == 2 * half > 0
    _same_state(a, b)
    assert _losses(tmp_path / "killed") == _losses(tmp_path / "full")
    rows = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert {"mse_loss", "dino_loss", "ibot_loss", "baseline_mse"} <= set(rows[0])
    assert (tmp_path / "full" / "loss.png").stat().st_size > 0
    assert json.loads((tmp_path / "full" / "config.json").read_text())["ema"] == 0.990025
    assert not torch.equal(a["encoder"]["blocks.0.attn.qkv.weight"], a["target_encoder"]["blocks.0.attn.qkv.weight"])
    with pytest.raises(ConfigError, match="prototypes"):  # settings that change the result are refused
        pretrain(tiny_cfg(codes, tmp_path / "full", prototypes=16, steps=8))


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_rank_ddp_takes_the_same_steps_as_one_process(code_store, tmp_path):
    codes = code_store[0]
    kw = dict(steps=2, checkpoint_every=2, static_threshold=0.02)
    pretrain(tiny_cfg(codes, tmp_path / "single", **kw))
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(f"""
        import torch
        torch.set_num_threads(1)
        from vidcache.pretrain.tdv_config import TDVConfig
        from vidcache.pretrain.train import pretrain
        pretrain(TDVConfig(**{tiny_cfg(codes, tmp_path / 'ddp', **kw).__dict__!r}))
    """))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                        str(_free_port()), str(script)], env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [[json.loads(x) for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()] for d in ("single", "ddp")]
    for a, b in zip(*rows):
        for key in ("loss", "mse_loss", "dino_loss", "ibot_loss", "kept_sequences"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    a = torch.load(tmp_path / "single" / "ckpt_000002.pt", weights_only=True)
    b = torch.load(tmp_path / "ddp" / "ckpt_000002.pt", weights_only=True)
    _same_state(a, b, atol=2e-5)
    assert a["pretrain_flops"] == b["pretrain_flops"] > 0  # the ranks' counts add up to one process's


def test_checkpoints_are_per_frame_backbones(code_store, tmp_path):
    pretrain(tiny_cfg(code_store[0], tmp_path / "run", steps=1, checkpoint_every=1))
    path = tmp_path / "run" / "ckpt_000001.pt"
    ckpt = torch.load(path, weights_only=True)
    from vidcache.models.vit import VisionTransformer

    teacher = VisionTransformer(**ckpt["model_config"])
    teacher.load_state_dict(ckpt["target_encoder"])
    x = torch.randn(2, 3, 4, 32, 32)
    frames = x.transpose(1, 2).reshape(8, 3, 32, 32)
    with torch.no_grad():
        tok = teacher.eval()(frames)  # [8, 1 + 16, 96]
        bb = create_backbone(f"vidcache:{path}").eval()
        assert (bb.embed_dim, bb.num_frames, bb.frame_stride, bb.token_grid(4, 32, 32)) == (96, 4, 2, (4, 4, 4))
        torch.testing.assert_close(bb.forward_features(x), tok[:, 1:].reshape(2, 64, 96))
        cls = create_backbone(f"vidcache:{path}", feature="cls").eval()
        torch.testing.assert_close(cls(x), tok[:, 0].reshape(2, 4, 96).mean(1))
        cat = create_backbone(f"vidcache:{path}", feature="cls_concat").eval()
        assert cat.embed_dim == 384
        torch.testing.assert_close(cat(x), tok[:, 0].reshape(2, 384))
        student = create_backbone(f"vidcache:{path}", which="encoder").eval()
        assert not torch.allclose(student(x), bb(x))

        model = build_tdv("vit_micro", img_size=32, patch_size=8, motion_depth=1, prototypes=32, head_hidden=32,
                          head_bottleneck=16)
        obj = SimpleNamespace(model=model)
        TDVObjective.load(obj, ckpt)
        motion = create_backbone(f"vidcache:{path}#motion").eval()
        model.eval()
        expected = model.motion(x.transpose(1, 2)[:, 1:] - x.transpose(1, 2)[:, :-1],
                                model.encode(model.frame_encoder, x.transpose(1, 2)[:, :-1]))
        assert motion.token_grid(4, 32, 32) == (3, 4, 4)
        torch.testing.assert_close(motion.forward_features(x), expected[:, :, 1:].reshape(2, 48, 96))
    from vidcache.errors import VidcacheError

    with pytest.raises(VidcacheError, match="motion"):
        create_backbone(f"vidcache:{path}#motor")


def _cls_of_last_blocks(vit, x, blocks, condition=None):
    """Re-typed: the class token after each of the last `blocks` blocks, each through the final norm."""
    h = vit.patch_embed(x) + vit.interpolate_pos_encoding(x)
    h = torch.cat([vit.cls_token.expand(h.shape[0], -1, -1), h], dim=1)
    out = []
    for i, blk in enumerate(vit.blocks):
        h = blk(h, condition)
        if i >= len(vit.blocks) - blocks:
            out.append(vit.norm(h))
    return out


def test_tdv_backbones_declare_their_cls_token_and_named_cls_features_read_it(code_store, synth_corpus, tmp_path):
    pretrain(tiny_cfg(code_store[0], tmp_path / "run", steps=1, checkpoint_every=1))
    path = tmp_path / "run" / "ckpt_000001.pt"
    ckpt = torch.load(path, weights_only=True)
    from vidcache.models.vit import VisionTransformer

    teacher = VisionTransformer(**ckpt["model_config"]).eval()
    teacher.load_state_dict(ckpt["target_encoder"])
    x = torch.randn(2, 3, 4, 32, 32)
    frames = x.transpose(1, 2).reshape(8, 3, 32, 32)
    with torch.no_grad():
        bb = create_backbone(f"vidcache:{path}").eval()
        assert bb.has_cls
        tokens, cls = bb.forward_with_cls(x, 2)
        torch.testing.assert_close(tokens, bb.forward_features(x))
        ref = _cls_of_last_blocks(teacher, frames, 2)
        expected = torch.stack([o[:, 0] for o in ref], dim=1).reshape(2, 4, 2, 96).mean(1)  # frames' mean
        torch.testing.assert_close(cls, expected)

        motion = create_backbone(f"vidcache:{path}#motion").eval()
        assert motion.has_cls
        m_tokens, m_cls = motion.forward_with_cls(x, 1)
        torch.testing.assert_close(m_tokens, motion.forward_features(x))
        model = build_tdv("vit_micro", img_size=32, patch_size=8, motion_depth=1, prototypes=32, head_hidden=32,
                          head_bottleneck=16)
        TDVObjective.load(SimpleNamespace(model=model), ckpt)
        model.eval()
        expected = model.motion(x.transpose(1, 2)[:, 1:] - x.transpose(1, 2)[:, :-1],
                                model.encode(model.frame_encoder, x.transpose(1, 2)[:, :-1]))[:, :, 0].mean(1)
        torch.testing.assert_close(m_cls[:, 0], expected)
    # The class token as the backbone's own feature: nothing beside it to name.
    assert not create_backbone(f"vidcache:{path}", feature="cls").has_cls
    assert not create_backbone(f"vidcache:{path}", feature="cls_concat").has_cls
    # A per-frame checkpoint whose ViT has no class token declares none.
    plain = VisionTransformer(**{**ckpt["model_config"], "cls_token": False})
    torch.save({**ckpt, "model_config": {**ckpt["model_config"], "cls_token": False},
                "target_encoder": plain.state_dict()}, tmp_path / "plain.pt")
    assert not create_backbone(f"vidcache:{tmp_path / 'plain.pt'}").has_cls

    # From the CLI: `--features cls` stores the frames' mean class token; refused in one line without one.
    from vidcache.cache import Store

    manifest = synth_corpus[0]
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "vidcache", *map(str, args)], capture_output=True, text=True,
                              env=env, timeout=300)

    common = ("--protocol", "1x1", "--workers", "0", "--device", "cpu")
    r = cli("extract", "clips", manifest, "-o", tmp_path / "cls.zarr", "--backbone", f"vidcache:{path}",
            "--features", "cls", *common)
    assert r.returncode == 0, r.stderr[-2000:]
    store = Store.open(tmp_path / "cls.zarr", kind="clips")
    assert store.attrs["has_cls"] and store.attrs["features"] == ["mean", "cls"]
    assert store.group["clips/features/cls"].shape[1:] == (1, 96)
    for args in (("--backbone", f"vidcache:{path}", "--backbone-option", "feature=cls"),
                 ("--backbone", f"vidcache:{tmp_path / 'plain.pt'}")):
        r = cli("extract", "clips", manifest, "-o", tmp_path / "refused.zarr", *args, "--features", "cls", *common)
        assert r.returncode == 2 and "need a CLS token but" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "refused.zarr").exists()


# ----------------------------------------------------------------------------- bad input

def test_bad_stores_are_refused_before_work(code_store, tmp_path):
    codes = code_store[0]  # 16 code frames at 16 fps
    with pytest.raises(ConfigError, match="fewer than the 31 code frames"):
        Trainer(tiny_cfg(codes, tmp_path / "a", num_frames=16, frame_stride=2), torch.device("cpu"))
    with pytest.raises(ConfigError, match="patch"):
        Trainer(tiny_cfg(codes, tmp_path / "b", patch_size=12), torch.device("cpu"))
    src = type("S", (), {"fps": None, "src_fps": np.array([np.nan, np.nan]), "__len__": lambda self: 2})()
    with pytest.raises(ConfigError, match="no frame rate"):
        TDVObjective.frame_stride(TDVConfig(codes="c", out="o"), src)
    src.src_fps = np.array([25.0, 30.0])
    with pytest.raises(ConfigError, match="different frame rates"):
        TDVObjective.frame_stride(TDVConfig(codes="c", out="o"), src)
    src.fps = 12.0
    assert TDVObjective.frame_stride(TDVConfig(codes="c", out="o"), src) == 3  # 0.25 s at 12 fps
    assert not list((tmp_path).glob("*/ckpt_*"))


def test_config_reports_every_problem():
    from vidcache.config import check

    with pytest.raises(ConfigError) as err:
        check(TDVConfig(codes="", out="", model="vit_nano", num_frames=1, teacher_temp=0.0, ema=1.5, loader="webm"))
    for word in ("codes is required", "out is required", "vit_nano", "num_frames", "teacher_temp", "ema", "loader"):
        assert word in str(err.value)
    recipe = TDVConfig.recipe(codes="c", out="o")
    assert (recipe.model, recipe.patch_size, recipe.num_frames, recipe.prototypes, recipe.lr) == (
        "vit_base", 14, 16, 32768, 1e-4)
    assert check(recipe) is not None


def test_cli_pretrain_then_extract_and_probe_the_checkpoint(code_store, synth_corpus, tmp_path, capsys):
    from vidcache.cli import main

    def run(*argv):
        with pytest.raises(SystemExit) as e:
            main([str(a) for a in argv])
        captured = capsys.readouterr()
        return e.value.code, captured.out, captured.err

    run_dir = tmp_path / "run"
    code, out, err = run("pretrain", "tdv", "--codes", code_store[0], "-o", run_dir, "--patch-size", "8",
                         "--motion-depth", "1", "--prototypes", "32", "--head-hidden", "32", "--head-bottleneck",
                         "16", "--steps", "2", "--batch-size", "4", "--workers", "0", "--device", "cpu")
    assert code == 0, err
    assert "step=2" in out and (run_dir / "ckpt_000002.pt").is_file()
    manifest = synth_corpus[0]
    code, out, err = run("extract", "clips", manifest, "-o", tmp_path / "cls.zarr", "--backbone",
                         f"vidcache:{run_dir / 'ckpt_000002.pt'}", "--backbone-option", "feature=cls",
                         "--protocol", "1x1", "--workers", "0", "--device", "cpu")
    assert code == 0, err
    from vidcache.cache import Store

    store = Store.open(tmp_path / "cls.zarr", kind="clips")
    assert store.group["clips/emb"].shape[1:] == (1, 96)
    code, out, err = run("extract", "clips", manifest, "-o", tmp_path / "motion.zarr", "--backbone",
                         f"vidcache:{run_dir / 'ckpt_000002.pt'}#motion", "--protocol", "1x1", "--workers", "0",
                         "--device", "cpu")
    assert code == 0, err
    code, out, err = run("probe", "knn", tmp_path / "cls.zarr", "-o", tmp_path / "knn")
    assert code == 0, err
    # The dense probes read its patch tokens: label propagation on a frame-token store.
    code, out, err = run("extract", "clips", manifest, "-o", tmp_path / "frames.zarr", "--backbone",
                         f"vidcache:{run_dir / 'ckpt_000002.pt'}", "--protocol", "frames:all",
                         "--tokens", "full", "--workers", "0", "--device", "cpu")
    assert code == 0, err
    code, out, err = run("probe", "propagate", tmp_path / "frames.zarr", "-o", tmp_path / "prop", "--split", "train")
    assert code == 0, err
    assert json.loads((tmp_path / "prop" / "results.json").read_text())
    # A store too short for the context is refused with one line, before anything is written.
    code, out, err = run("pretrain", "tdv", "--codes", code_store[0], "-o", tmp_path / "bad", "--num-frames", "16",
                         "--device", "cpu")
    assert code == 2 and "fewer than the" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()


def test_example_plan_and_watch_evaluate_a_tdv_run(code_store, synth_corpus, tmp_path):
    """docs/example_plan_tdv.toml's checkpoints (cls, cls_concat, motion) on the run's files; eval watch
    with feature=cls evaluates each checkpoint once."""
    import tomllib

    from vidcache.evaluate.plan import parse_plan
    from vidcache.evaluate.report import collect_rows
    from vidcache.evaluate.run import run_plan
    from vidcache.evaluate.watch import watch

    run_dir = tmp_path / "tdv_run"
    pretrain(tiny_cfg(code_store[0], run_dir, steps=1, checkpoint_every=1))
    example = tomllib.loads((REPO / "docs" / "example_plan_tdv.toml").read_text())
    checkpoints = [{**c, "path": str(run_dir / "ckpt_*.pt")} for c in example["checkpoints"]]
    probes = [{"type": "knn", "ks": [3]}, {"type": "linear", "lrs": [1e-2], "wds": [1e-3], "epochs": 2}]
    assert [p["type"] for p in example["probes"]] == ["linear", "knn"]
    plan = parse_plan({"run": {"workers": 0, "batch_size": 8, "device": "cpu"}, "checkpoints": checkpoints,
                       "datasets": [{"name": "synth", "manifest": str(synth_corpus[0]), "protocol": "1x1"}],
                       "probes": probes})
    rows = run_plan(plan, tmp_path / "res")
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 3 * 2 * 2, [r.get("error") for r in rows if r["status"] != "ok"]  # 3 kinds x 2 steps x 2 probes
    assert {r["step"] for r in ok} == {0, 1}

    watch_plan = parse_plan({"run": {"workers": 0, "batch_size": 8, "device": "cpu"},
                             "checkpoints": [{"backbone": "tiny"}],
                             "datasets": [{"name": "synth", "manifest": str(synth_corpus[0]), "protocol": "1x1"}],
                             "probes": probes[:1]})
    done = watch(run_dir, watch_plan, tmp_path / "watch", poll_s=0.01, max_polls=3, options={"feature": "cls"})
    assert sorted(Path(p).name for p in done) == ["ckpt_000000.pt", "ckpt_000001.pt"]
    rows = [r for r in collect_rows(tmp_path / "watch") if r.get("checkpoint", "").endswith(".pt(feature=cls)")]
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
