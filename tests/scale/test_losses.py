"""SCALE losses against hand-computed values and an independent per-video recomputation."""

import math

import torch
import torch.nn.functional as F
from torch.testing import assert_close

from vidcache.scale.losses import contrastive_loss, info_nce, mcm_loss, pretext_loss, symmetric_info_nce
from vidcache.scale.model import SCALEModel


def test_info_nce_golden_identity_pairs():
    a = torch.eye(2)
    # -log(e^1 / (e^1 + e^0)) = log(1 + e^-1)
    want = math.log(1 + math.exp(-1))
    assert_close(info_nce(a, a, 1.0), torch.tensor([want, want]))
    assert_close(contrastive_loss(a, a, 1.0), torch.tensor(2 * want))


def test_info_nce_is_not_symmetric_but_the_symmetric_loss_is():
    a = F.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]), dim=-1)
    b = F.normalize(torch.tensor([[0.8, 0.6], [1.0, 0.0], [-0.6, 0.8]]), dim=-1)
    tau = 0.5

    def ell_tilde(x, y, i):  # eq. 4.2 with plain floats
        dots = [sum(p * q for p, q in zip(x[i].tolist(), y[j].tolist())) / tau for j in range(len(y))]
        return -(dots[i] - math.log(sum(math.exp(d) for d in dots)))

    ab = [ell_tilde(a, b, i) for i in range(3)]
    ba = [ell_tilde(b, a, i) for i in range(3)]
    assert_close(info_nce(a, b, tau), torch.tensor(ab))
    assert_close(info_nce(b, a, tau), torch.tensor(ba))
    assert not torch.allclose(info_nce(a, b, tau), info_nce(b, a, tau))
    assert_close(symmetric_info_nce(a, b, tau), torch.tensor([x + y for x, y in zip(ab, ba)]))
    assert_close(contrastive_loss(a, b, tau), torch.tensor(sum(ab + ba) / 3))
    assert_close(contrastive_loss(a, b, tau), contrastive_loss(b, a, tau))
    # Only the selected rows are scored, against every column.
    assert_close(info_nce(a, b, tau, rows=torch.tensor([2])), torch.tensor([ab[2]]))


def test_mcm_golden_sums_masked_clips_and_averages_videos():
    # Two videos x two clips, d = 2; only (video 0, clip 1) and (video 1, clip 0) are masked.
    pred = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.6, 0.8], [0.8, 0.6]]])
    target = torch.tensor([[[0.0, 1.0], [0.0, 1.0]], [[1.0, 0.0], [0.6, 0.8]]])
    mask = torch.tensor([[False, True], [True, False]])
    tau = 1.0
    P, T = pred.reshape(4, 2), target.reshape(4, 2)

    def ell(x, y, i):
        dots = (x[i] @ y.T / tau).tolist()
        return -(dots[i] - math.log(sum(math.exp(d) for d in dots)))

    # Rows 1 and 2 of the flattened batch are the masked clips; every clip of the batch competes.
    want = sum(ell(P, T, i) + ell(T, P, i) for i in (1, 2)) / 2
    assert_close(mcm_loss(pred, target, mask, tau), torch.tensor(want))


def test_mcm_ignores_unmasked_predictions_as_anchors():
    g = torch.Generator().manual_seed(0)
    pred = F.normalize(torch.randn(3, 4, 8, generator=g), dim=-1)
    target = F.normalize(torch.randn(3, 4, 8, generator=g), dim=-1)
    mask = torch.zeros(3, 4, dtype=torch.bool)
    mask[1, 2] = True
    before = mcm_loss(pred, target, mask, 0.1)
    pred2 = pred.clone()
    pred2[0, 0] = pred[2, 3]  # an unmasked anchor changes: only its role as a negative matters
    assert not torch.allclose(mcm_loss(pred2, target, mask, 0.1), before)
    # One masked clip in three videos: its summed loss over the batch, divided by the video count.
    assert_close(mcm_loss(pred, target, mask, 0.1) * 3,
                 symmetric_info_nce(pred.reshape(12, 8), target.reshape(12, 8), 0.1, torch.tensor([6])).sum())


def test_pretext_loss_matches_per_video_recomputation():
    torch.manual_seed(0)
    B, K, D, tau = 3, 4, 6, 0.2
    model = SCALEModel(D, hidden_dim=8, depth=1, num_heads=2, head_hidden=8, proj_dim=4, loss_form="thesis", dropout=0.0)
    emb = torch.randn(B, 2, K, D)
    box = torch.rand(B, 2, K, 6)
    mask = torch.zeros(B, 2, K, dtype=torch.bool)
    mask[:, 0, 1] = True
    mask[:, 1, 3] = True
    mask[2, 1, 0] = True
    out = pretext_loss(model, emb, box, mask, tau)

    # Independent recomputation: each set separately, per-clip loops.
    def ell_tilde(x, y, i):
        logits = x[i] @ y.T / tau
        return -(logits[i] - torch.logsumexp(logits, 0))

    mcm = 0.0
    cls = []
    for s in range(2):
        clips, c = model.predictor(emb[:, s], box[:, s], mask[:, s])
        cls.append(c)
        p = F.normalize(model.mcm_pred(clips), dim=-1).reshape(B * K, -1)
        t = F.normalize(model.mcm_target(model.predictor.input_proj(emb[:, s])), dim=-1).reshape(B * K, -1)
        for v in range(B):
            for k in range(K):
                if mask[v, s, k]:
                    i = v * K + k
                    mcm = mcm + ell_tilde(p, t, i) + ell_tilde(t, p, i)
    mcm = mcm / B
    a = F.normalize(model.set_a(cls[0]), dim=-1)
    b = F.normalize(model.set_b(cls[1]), dim=-1)
    set_ = sum(ell_tilde(a, b, i) + ell_tilde(b, a, i) for i in range(B)) / B
    assert_close(out["mcm"], mcm.detach(), rtol=1e-5, atol=1e-5)
    assert_close(out["set"], set_.detach(), rtol=1e-5, atol=1e-5)
    assert_close(out["loss"], (mcm + set_).detach(), rtol=1e-5, atol=1e-5)


def test_pretext_loss_targets_exclude_the_position_encoding():
    # Target C_i has no box in it: changing boxes moves predictions but never targets.
    torch.manual_seed(1)
    model = SCALEModel(5, hidden_dim=8, depth=1, num_heads=2, head_hidden=8, proj_dim=4, loss_form="thesis", dropout=0.0)
    seen = []
    model.mcm_target.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    emb, mask = torch.randn(2, 2, 3, 5), torch.zeros(2, 2, 3, dtype=torch.bool)
    mask[..., 0] = True
    pretext_loss(model, emb, torch.rand(2, 2, 3, 6), mask, 0.1)
    pretext_loss(model, emb, torch.rand(2, 2, 3, 6), mask, 0.1)
    assert_close(seen[0], seen[1])


# ----------------------------------------------------------------------------- the official form

def _official_contrastive(prediction, target, temp, dual=True):
    """Separius/SCALE src/scale.py `Scale.contrastive_loss`, re-typed (float64 in the tests)."""
    logits = torch.einsum("nd,md->nm", prediction, target) / temp
    con_loss = -torch.diag(torch.log_softmax(logits, dim=1))
    if dual:
        con_loss = (con_loss - torch.diag(torch.log_softmax(logits, dim=0))) * 0.5
    return con_loss.mean()


def _official_dense(prediction, target, mask, temp):
    """The MCM ("dense") loss of `Scale.forward`, re-typed: every clip of the batch is a candidate."""
    logits = torch.einsum("nc,mc->nm", prediction, target) / temp
    return -torch.masked_select(torch.diag(torch.log_softmax(logits, dim=1)), mask.view(-1)).mean()


def test_official_losses_equal_the_reference_formulas():
    from vidcache.scale.losses import official_mcm_loss, official_set_loss

    g = torch.Generator().manual_seed(0)
    s1 = F.normalize(torch.randn(5, 7, generator=g, dtype=torch.float64), dim=-1)
    s2 = F.normalize(torch.randn(5, 7, generator=g, dtype=torch.float64), dim=-1)
    assert_close(official_set_loss(s1.float(), s2.float(), 0.2), _official_contrastive(s1, s2, 0.2).float())
    # x0.5 of the thesis' symmetric sum: half of L_ctr(A, B)
    assert_close(official_set_loss(s1.float(), s2.float(), 0.2), contrastive_loss(s1.float(), s2.float(), 0.2) / 2)
    pred = F.normalize(torch.randn(24, 7, generator=g, dtype=torch.float64), dim=-1)
    target = F.normalize(torch.randn(24, 7, generator=g, dtype=torch.float64), dim=-1)
    mask = torch.rand(24, generator=g) < 0.25
    mask[3] = True
    assert_close(official_mcm_loss(pred.float(), target.float(), mask, 0.2),
                 _official_dense(pred, target, mask, 0.2).float())
    # Golden: two clips, one masked, orthogonal unit vectors at tau = 1: log(1 + e^-1).
    eye = torch.eye(2)
    assert_close(official_mcm_loss(eye, eye, torch.tensor([False, True]), 1.0),
                 torch.tensor(math.log(1 + math.exp(-1))))
    # No masked clip: zero, with a gradient path (the reference would return NaN).
    p = eye.clone().requires_grad_()
    zero = official_mcm_loss(p, eye, torch.tensor([False, False]), 1.0)
    zero.backward()
    assert float(zero.detach()) == 0.0 and p.grad is not None


def _official_forward(model, x, pos, mask, temp):
    """`Scale.forward(x, pos, unsupervised=True)` of the official code re-typed on vidcache's modules, with the
    clip mask given instead of drawn; x [B, 2, V, D] already standardised as the predictor reads it."""
    B, two, V, D = x.shape
    p = model.predictor
    h = p.input_proj(x.reshape(-1, V, D))
    m = mask.reshape(-1, V)
    h = torch.where(m.unsqueeze(-1), p.mask_token.expand_as(h), h)
    h = h + p.box_mlp(pos.reshape(-1, V, pos.shape[-1]))
    h = torch.cat([p.cls_token.expand(h.shape[0], 1, -1), h], dim=1)
    for blk in p.blocks:
        h = blk(h)
    h = p.norm(h)
    set_cls = F.normalize(model.set_head(h[:, 0]), dim=-1).view(B, two, -1)
    set_loss = _official_contrastive(set_cls[:, 0].double(), set_cls[:, 1].double(), temp)
    target = F.normalize(model.mcm_target(x), dim=-1).reshape(-1, model.mcm_target[-1].out_features)
    prediction = F.normalize(model.mcm_pred(h[:, 1:]), dim=-1).reshape(target.shape)
    dense_loss = _official_dense(prediction.double(), target.double(), m, temp)
    return set_loss, dense_loss, (set_loss + dense_loss) / 2  # train.py: weights 1 and 1, over their sum


def test_official_pretext_loss_equals_the_reference_forward():
    torch.manual_seed(0)
    B, K, D, tau = 4, 5, 6, 0.2
    model = SCALEModel(D, hidden_dim=16, depth=2, num_heads=2, proj_dim=8, pred_head_hidden=12,
                       target_head_hidden=10).eval()  # eval: no dropout, so both passes see one network
    model.predictor.set_stats(torch.full((D,), 0.3), torch.full((D,), 1.7))
    emb, box = torch.randn(B, 2, K, D), torch.rand(B, 2, K, 6)
    mask = torch.rand(B, 2, K) < 0.3
    mask[0, 1, 2] = True
    out = pretext_loss(model, emb, box, mask, tau)
    set_ref, dense_ref, total_ref = _official_forward(model, (emb - 0.3) / 1.7, box, mask, tau)
    assert_close(out["set"].double(), set_ref, rtol=1e-5, atol=1e-6)
    assert_close(out["mcm"].double(), dense_ref, rtol=1e-5, atol=1e-6)
    assert_close(out["loss"].double(), total_ref, rtol=1e-5, atol=1e-6)


def test_official_heads_shapes_and_no_bias():
    m = SCALEModel(10, hidden_dim=16, depth=1, num_heads=2, proj_dim=8)  # official widths 4096 / 2048
    lin = lambda seq: [mod for mod in seq if isinstance(mod, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in lin(m.mcm_pred)] == [(16, 4096), (4096, 8)]
    assert [(l.in_features, l.out_features) for l in lin(m.mcm_target)] == [(10, 2048), (2048, 2048), (2048, 8)]
    assert [(l.in_features, l.out_features) for l in lin(m.set_head)] == [(16, 4096), (4096, 8)]
    assert all(l.bias is None for seq in (m.mcm_pred, m.mcm_target, m.set_head) for l in lin(seq))
    assert not hasattr(m, "set_a") and not hasattr(m, "set_b")
    p = m.predictor
    assert torch.equal(p.cls_token, torch.zeros(16)) and torch.equal(p.mask_token, torch.zeros(16))
    assert [type(x).__name__ for x in p.box_mlp] == ["Linear", "ReLU", "Linear"]
    assert (p.box_mlp[0].in_features, p.box_mlp[0].out_features, p.box_mlp[2].out_features) == (6, 32, 16)
