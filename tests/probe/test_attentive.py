import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidcache.probe.attentive import AttentiveClassifier, AttentiveConfig, AttentiveHead, AttentiveProbe

D, H, K = 16, 4, 5


def jepa_state_dict(seed=0, d=D, k=K, hidden=4 * D):
    """A state_dict with the names and shapes of facebookresearch/jepa's AttentiveClassifier (depth 1)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.3  # noqa: E731
    p = "pooler.cross_attention_block."
    return {
        "pooler.query_tokens": r(1, 1, d),
        p + "norm1.weight": 1 + r(d), p + "norm1.bias": r(d),
        p + "xattn.q.weight": r(d, d), p + "xattn.q.bias": r(d),
        p + "xattn.kv.weight": r(2 * d, d), p + "xattn.kv.bias": r(2 * d),
        p + "xattn.proj.weight": r(d, d), p + "xattn.proj.bias": r(d),
        p + "norm2.weight": 1 + r(d), p + "norm2.bias": r(d),
        p + "mlp.fc1.weight": r(hidden, d), p + "mlp.fc1.bias": r(hidden),
        p + "mlp.fc2.weight": r(d, hidden), p + "mlp.fc2.bias": r(d),
        "linear.weight": r(k, d), "linear.bias": r(k),
    }


def reference_logits(sd, x, heads=H, mask=None):
    """The equations, written independently: q + xattn(q, LN1(x)); q + MLP(LN2(q)); linear."""
    p = "pooler.cross_attention_block."
    b, n, d = x.shape
    hd = d // heads
    xn = F.layer_norm(x, (d,), sd[p + "norm1.weight"], sd[p + "norm1.bias"])
    q0 = sd["pooler.query_tokens"].expand(b, 1, d)
    q = F.linear(q0, sd[p + "xattn.q.weight"], sd[p + "xattn.q.bias"])
    kv = F.linear(xn, sd[p + "xattn.kv.weight"], sd[p + "xattn.kv.bias"])
    k, v = kv[..., :d], kv[..., d:]
    out = torch.zeros(b, 1, d)
    for h in range(heads):
        s = slice(h * hd, (h + 1) * hd)
        att = q[..., s] @ k[..., s].transpose(1, 2) / math.sqrt(hd)
        if mask is not None:
            att = att.masked_fill(~mask[:, None, :], float("-inf"))
        out[..., s] = att.softmax(-1) @ v[..., s]
    q = q0 + F.linear(out, sd[p + "xattn.proj.weight"], sd[p + "xattn.proj.bias"])
    y = F.layer_norm(q, (d,), sd[p + "norm2.weight"], sd[p + "norm2.bias"])
    y = F.linear(F.gelu(F.linear(y, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])),
                 sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
    q = q + y
    return F.linear(q[:, 0], sd["linear.weight"], sd["linear.bias"])


def test_jepa_state_dict_loads_strictly_and_logits_match_reference():
    sd = jepa_state_dict()
    model = AttentiveClassifier(embed_dim=D, num_heads=H, num_classes=K)
    assert set(model.state_dict()) == set(sd)
    model.load_state_dict(sd, strict=True)
    x = torch.randn(3, 7, D)
    torch.testing.assert_close(model(x), reference_logits(sd, x), rtol=1e-5, atol=1e-5)
    # The batch-dict head is the same module: same names, same logits.
    head = AttentiveHead(D, H, num_classes=K)
    head.load_state_dict(sd, strict=True)
    torch.testing.assert_close(head({"x": x}), model(x))


def test_padding_mask_equals_dropping_the_padded_tokens():
    sd = jepa_state_dict(1)
    model = AttentiveClassifier(embed_dim=D, num_heads=H, num_classes=K)
    model.load_state_dict(sd)
    x = torch.randn(2, 6, D)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    out = model(x, mask)
    torch.testing.assert_close(out[1], model(x[1:, :4])[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, reference_logits(sd, x, mask=mask), rtol=1e-5, atol=1e-5)
    x2 = x.clone()
    x2[1, 4:] = 1e3  # whatever sits in the padding cannot change the result
    torch.testing.assert_close(model(x2, mask), out)


def test_init_follows_jepa():
    torch.manual_seed(0)
    m = AttentiveClassifier(embed_dim=64, num_heads=4, num_classes=3)
    blk = m.pooler.cross_attention_block
    assert 0.015 < m.pooler.query_tokens.std() < 0.025
    assert 0.015 < blk.xattn.q.weight.std() < 0.025
    # proj and fc2 are rescaled by 1/sqrt(2)
    assert 0.010 < blk.xattn.proj.weight.std() < 0.018 and 0.010 < blk.mlp.fc2.weight.std() < 0.018
    assert torch.all(blk.xattn.kv.bias == 0) and torch.all(blk.norm1.weight == 1)


def test_attentive_probe_fits_tokens_with_masks(make_clusters, tmp_path):
    tr = make_clusters(36, k=3, d=D, views=2, tokens=4, seed=0)
    va = make_clusters(12, k=3, d=D, views=2, tokens=4, seed=1)
    for d in (tr, va):
        d.mask = np.ones(d.x.shape[:3], bool)
        d.mask[::2, :, 3] = False
    cfg = AttentiveConfig(num_heads=H, epochs=3, batch_size=16, lrs=[1e-3, 1e-2], wds=[0.01], device="cpu")
    p = AttentiveProbe(cfg).fit(tr, va)
    assert p.metrics["val"]["top1"] > 60
    probs = p.predict(va)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    p.save(tmp_path)
    back = AttentiveProbe.load(tmp_path)
    np.testing.assert_allclose(back.predict(va), probs, rtol=1e-5, atol=1e-6)
    # The saved head is a jepa-compatible state_dict.
    from safetensors.torch import load_file
    AttentiveClassifier(embed_dim=D, num_heads=H, num_classes=3).load_state_dict(
        load_file(str(tmp_path / "head.safetensors")), strict=True)


def test_attentive_video_mode_sees_all_views(make_clusters):
    tr = make_clusters(12, k=2, d=D, views=3, tokens=2)
    cfg = AttentiveConfig(num_heads=H, epochs=1, batch_size=4, sample="video", device="cpu")
    p = AttentiveProbe(cfg).fit(tr, make_clusters(6, k=2, d=D, views=3, tokens=2, seed=1))
    assert p.info["num_train"] == 12 and p.predict(tr).shape == (12, 2)


@pytest.mark.gpu
def test_attentive_grid_on_gpu_matches_cpu(make_clusters):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    tr = make_clusters(20, k=2, d=D, views=1, tokens=3)
    va = make_clusters(8, k=2, d=D, views=1, tokens=3, seed=1)
    outs = []
    for dev in ("cpu", "cuda"):
        cfg = AttentiveConfig(num_heads=H, epochs=2, batch_size=8, lrs=[1e-3, 1e-2], device=dev)
        outs.append(AttentiveProbe(cfg).fit(tr, va).predict(va))
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-3, atol=1e-4)
