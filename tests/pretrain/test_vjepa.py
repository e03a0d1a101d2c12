"""V-JEPA (vidcache/pretrain/vjepa.py): encoder and predictor shapes, the predictor's forward and the
loss against re-typed float64 versions of facebookresearch/jepa's, a golden loss value, the EMA target.

Reference (re-typed below for parity only): facebookresearch/jepa `src/models/predictor.py`
(VisionTransformerPredictor.forward), `app/vjepa/train.py` (forward_target, loss_fn, the momentum
update `param_k.mul_(m).add_((1 - m) * param_q)`).
"""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from vidcache.pretrain import PretrainConfig
from vidcache.pretrain.vjepa import VJEPA, Predictor, VJEPAObjective, build_vjepa, ema_update, param_groups

# vit_micro (D = 96) on 32 px clips of 4 frames, patch 8, tubelet 2: a 2 x 4 x 4 grid of 32 tokens.
B, N, D = 2, 32, 96


def _model(seed=0, pred_dim=48, pred_depth=2):
    return build_vjepa("vit_micro", img_size=32, num_frames=4, patch_size=8, tubelet_size=2,
                       pred_depth=pred_depth, pred_dim=pred_dim, seed=seed)


def _video(seed=0):
    return torch.randn(B, 3, 4, 32, 32, generator=torch.Generator().manual_seed(seed))


def _masks():
    """Fixed context / target indices for two mask kinds (disjoint within each kind)."""
    enc = [torch.tensor([[0, 1, 2, 3, 8, 9, 10, 11, 16, 17], [4, 5, 6, 7, 12, 13, 14, 15, 20, 21]]),
           torch.tensor([[0, 5, 10, 15, 20, 25], [1, 6, 11, 16, 21, 26]])]
    pred = [torch.tensor([[4, 5, 6, 12, 13, 30], [0, 1, 2, 8, 9, 31]]),
            torch.tensor([[2, 3, 7, 8, 30, 31], [0, 2, 3, 4, 29, 30]])]
    return enc, pred


# ----------------------------------------------------------------------------- re-typed reference

def ref_predictor(pred: Predictor, ctxt, masks_x, masks, mask_index):
    """VisionTransformerPredictor.forward (one mask, no cls token), in the predictor's dtype."""
    def gather(x, m):
        return torch.gather(x, 1, m.unsqueeze(-1).expand(-1, -1, x.size(-1)))

    n_ctxt = ctxt.shape[1]
    x = pred.predictor_embed(ctxt)
    pos = pred.predictor_pos_embed.repeat(ctxt.shape[0], 1, 1)
    x = x + gather(pos, masks_x)
    pred_tokens = pred.mask_tokens[mask_index].repeat(ctxt.shape[0], masks.shape[1], 1) + gather(pos, masks)
    x = torch.cat([x, pred_tokens], dim=1)
    for blk in pred.predictor_blocks:
        x = blk(x)
    x = pred.predictor_norm(x)
    return pred.predictor_proj(x[:, n_ctxt:])


def ref_loss(model: VJEPA, video, masks_enc, masks_pred):
    """forward_target (layer_norm of the target encoder's tokens), then loss_fn with loss_exp = 1."""
    with torch.no_grad():
        h = model.target_encoder(video)
        h = F.layer_norm(h, (h.size(-1),))
    loss = 0.0
    for i, (m_enc, m_pred) in enumerate(zip(masks_enc, masks_pred)):
        z = ref_predictor(model.predictor, model.encoder(video, masks=m_enc), m_enc, m_pred, i)
        target = torch.gather(h, 1, m_pred.unsqueeze(-1).expand(-1, -1, h.size(-1)))
        loss = loss + torch.mean(torch.abs(z - target) ** 1.0) / 1.0
    return loss / len(masks_pred)


# ----------------------------------------------------------------------------- shapes

def test_encoder_and_predictor_shapes():
    model = _model().eval()
    video = _video()
    enc, pred = _masks()
    with torch.no_grad():
        assert model.target_encoder(video).shape == (B, N, D)
        z = model.encoder(video, masks=enc[0])
        assert z.shape == (B, 10, D)
        stacked = model.encoder(video, masks=[enc[1], enc[1]])  # masks of one length stack along the batch
        assert stacked.shape == (2 * B, 6, D)
        out = model.predictor(z, enc[0], pred[0], mask_index=0)
        assert out.shape == (B, 6, D)  # one prediction per target index, in the encoder's width
        assert model.predictor.predictor_embed.out_features == 48 and len(model.predictor.predictor_blocks) == 2
    with pytest.raises(ValueError, match="does not hold"):
        Predictor(num_patches=30, grid_size=4, grid_depth=2, embed_dim=D)


def test_build_is_identical_for_a_seed_and_the_target_starts_as_the_encoder():
    m = _model(seed=0)
    for (n, a), b in zip(m.encoder.state_dict().items(), m.target_encoder.state_dict().values()):
        assert torch.equal(a, b), n
    assert not any(p.requires_grad for p in m.target_encoder.parameters())
    again = _model(seed=0)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), again.state_dict().values()))
    other = _model(seed=1)
    assert not torch.equal(other.encoder.blocks[0].attn.qkv.weight, m.encoder.blocks[0].attn.qkv.weight)
    # the predictor's mask tokens start at zero, its residual outputs scaled by 1/sqrt(2 * layer)
    assert all(float(t.detach().abs().max()) == 0 for t in m.predictor.mask_tokens)


def test_param_groups_decay_matrices_only_and_skip_the_target():
    m = _model()
    decay, no_decay = param_groups(m)
    names = {id(p): n for n, p in m.named_parameters()}
    assert all(p.ndim >= 2 and "mask_tokens" not in names[id(p)] for p in decay["params"])
    assert all(p.ndim <= 1 or "mask_tokens" in names[id(p)] for p in no_decay["params"])
    assert not any(names[id(p)].startswith("target_encoder") for g in (decay, no_decay) for p in g["params"])
    trained = [p for n, p in m.named_parameters() if p.requires_grad]
    assert len(decay["params"]) + len(no_decay["params"]) == len(trained)
    assert no_decay["weight_decay"] == 0.0 and decay["apply_wd"] and not no_decay["apply_wd"]


# ----------------------------------------------------------------------------- parity and golden values

def test_predictor_equals_the_retyped_reference_in_float64():
    model = _model().double().eval()
    with torch.no_grad():
        for t in model.predictor.mask_tokens:  # non-zero tokens, so a wrong index would show
            t.normal_()
    enc, pred = _masks()
    ctxt = torch.randn(B, 10, D, dtype=torch.float64)
    with torch.no_grad():
        for i in range(2):
            got = model.predictor(ctxt, enc[0], pred[i], mask_index=i)
            torch.testing.assert_close(got, ref_predictor(model.predictor, ctxt, enc[0], pred[i], i),
                                       rtol=0, atol=1e-12)


GOLDEN_LOSS = 0.8312001955645423  # ref_loss of _model(seed=0), _video(seed=0), _masks(), float64


def test_loss_equals_the_retyped_reference_and_its_golden_value():
    enc, pred = _masks()
    model = _model()
    with torch.no_grad():
        loss = model(_video(), enc, pred)
    double = _model().double()
    with torch.no_grad():
        ref = ref_loss(double, _video().double(), enc, pred)
    torch.testing.assert_close(loss.double(), ref, rtol=1e-6, atol=1e-7)
    # The golden value of this seed, clip and masks (float64 reference; a change of the model, its
    # initialisation or the loss moves it).
    assert float(ref) == pytest.approx(GOLDEN_LOSS, abs=1e-9)
    # and its gradients: the loss trains the encoder and predictor, never the target
    model.train()
    model(_video(), enc, pred).backward()
    assert all(p.grad is None for p in model.target_encoder.parameters())
    assert model.encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert model.predictor.mask_tokens[1].grad.abs().sum() > 0


# ----------------------------------------------------------------------------- the EMA target

def test_ema_update_equals_the_reference_formula():
    torch.manual_seed(0)
    online, target = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    ema_update(target, online, 0.9)
    for k, v in target.state_dict().items():
        torch.testing.assert_close(v, 0.9 * before[k] + 0.1 * online.state_dict()[k])


def test_update_target_moves_every_target_parameter_by_the_momentum():
    model = _model()
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # as if the optimiser had stepped
    q = {n: p.detach().double().clone() for n, p in model.encoder.named_parameters()}
    k = {n: p.detach().double().clone() for n, p in model.target_encoder.named_parameters()}
    predictor = {n: p.detach().clone() for n, p in model.predictor.named_parameters()}
    m = 0.998
    model.update_target(m)
    for n, p in model.target_encoder.named_parameters():
        expected = k[n] * m + (1.0 - m) * q[n]  # param_k.mul_(m).add_((1 - m) * param_q), float64
        torch.testing.assert_close(p.detach().double(), expected, rtol=0, atol=1e-6, msg=n)
    for n, p in model.encoder.named_parameters():
        assert torch.equal(p.detach().double(), q[n]), n  # the online encoder is not touched
    assert all(torch.equal(p, predictor[n]) for n, p in model.predictor.named_parameters())


def test_momentum_rises_linearly_over_the_scaled_schedule():
    cfg = PretrainConfig(codes="c", out="o", steps=80, ema=(0.996, 1.0), schedule_scale=1.25)
    obj = SimpleNamespace(cfg=cfg)
    total = 100  # steps x schedule_scale: V-JEPA truncates the last 20 % of its schedules
    for step, expected in ((0, 0.996), (25, 0.997), (50, 0.998), (80, 0.996 + 0.004 * 0.8), (100, 1.0), (150, 1.0)):
        got = VJEPAObjective.schedules(obj, step)["momentum"]
        assert got == pytest.approx(expected, abs=1e-12), step
        assert math.isclose(got, min(1.0, 0.996 + 0.004 * step / total), abs_tol=1e-12)


# ----------------------------------------------------------------------------- training FLOPs

def test_step_flops_from_the_fit_equal_counting_each_step():
    """The quadratic fit of one-mask steps gives, for other lengths and batches, what the counter
    measures on the whole step (two masks, the target's forward once)."""
    from vidcache.models.flops import flop_counter

    model = _model()
    obj = SimpleNamespace(model=model)

    def count(fn):
        counter = flop_counter()
        with counter:
            fn()
        return int(counter.get_total_flops())

    video = _video()
    for enc, pred in (_masks(), ([m[:, :7] for m in _masks()[0]], [m[:, :4] for m in _masks()[1]])):
        expected = count(lambda: model(video, enc, pred).backward())
        assert VJEPAObjective.step_flops(obj, count, video, {"masks_enc": enc, "masks_pred": pred}) == expected
    model.zero_grad(set_to_none=True)
    obj._flops_fit = None
    one = VJEPAObjective.step_flops(obj, count, video[:1], {"masks_enc": [enc[0][:1]], "masks_pred": [pred[0][:1]]})
    assert all(p.grad is None for p in model.parameters())  # the fit runs on a copy: no gradient left behind
    assert one == count(lambda: model(video[:1], [enc[0][:1]], [pred[0][:1]]).backward())
