"""The SCALE predictor: masking, CLS, position encoding from the stored boxes."""

import torch
from torch.testing import assert_close

from vidcache.scale.model import SCALEModel, SCALEPredictor


def _model(D=6, H=8):
    torch.manual_seed(0)
    return SCALEPredictor(D, hidden_dim=H, depth=2, num_heads=2).eval()


def test_shapes_and_variable_set_size():
    m = _model()
    clips, cls = m(torch.randn(3, 5, 6), torch.rand(3, 5, 6))
    assert clips.shape == (3, 5, 8) and cls.shape == (3, 8)
    clips, cls = m(torch.randn(2, 15, 6, dtype=torch.float16), torch.rand(2, 15, 6))  # eval: 5x3 views
    assert clips.shape == (2, 15, 8) and clips.dtype == torch.float32


def test_masked_clip_content_is_hidden():
    m = _model()
    emb, box = torch.randn(1, 4, 6), torch.rand(1, 4, 6)
    mask = torch.tensor([[False, True, False, False]])
    emb2 = emb.clone()
    emb2[0, 1] = 100.0  # the masked clip's content must not reach any output
    assert_close(m(emb, box, mask)[0], m(emb2, box, mask)[0])
    assert not torch.allclose(m(emb, box)[0], m(emb2, box)[0])


def test_box_mlp_receives_the_boxes_and_positions_matter():
    m = _model()
    seen = []
    m.box_mlp.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach().clone()))
    emb, box = torch.randn(2, 3, 6), torch.rand(2, 3, 6)
    mask = torch.tensor([[True, False, False], [False, False, True]])
    out1 = m(emb, box, mask)
    assert torch.equal(seen[0], box)
    # A masked clip is told apart only by its position: moving its box changes its output.
    box2 = box.clone()
    box2[0, 0] = torch.tensor([0.5, 0.5, 0.9, 1.0, 1.0, 1.0])
    out2 = m(emb, box2, mask)
    assert not torch.allclose(out1[0][0, 0], out2[0][0, 0])


def test_standardisation_uses_stored_stats():
    m = _model()
    emb, box = torch.randn(1, 3, 6) * 50 + 7, torch.rand(1, 3, 6)
    m.set_stats(torch.full((6,), 7.0), torch.full((6,), 50.0))
    ref = _model()
    assert_close(m(emb, box)[0], ref((emb - 7) / 50, box)[0])
    assert "feat_mean" in m.state_dict() and "feat_std" in m.state_dict()


def test_same_seed_same_init_and_heads_separate():
    torch.manual_seed(5)
    a = SCALEModel(6, 8, 1, 2, head_hidden=8, proj_dim=4, loss_form="thesis")
    torch.manual_seed(5)
    b = SCALEModel(6, 8, 1, 2, head_hidden=8, proj_dim=4, loss_form="thesis")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    assert not torch.equal(a.set_a[0].weight, a.set_b[0].weight)
    assert not torch.equal(a.mcm_pred[0].weight, a.mcm_target[0].weight)
