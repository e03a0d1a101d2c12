import dataclasses
import math

import numpy as np
import pytest
import torch

from vidcache.probe.attentive import (
    AttentiveClassifier,
    AttentiveConfig,
    AttentiveHead,
    AttentiveProbe,
    segments_per_view,
)
from vidcache.probe.metrics import classification_metrics

D, H, K = 16, 4, 5
LINEAR = ("weight", "bias")
MLP_KEYS = ("mlp.fc1", "mlp.fc2")


def reference_keys(layout, depth, d=D, k=K, hidden=4 * D):
    """Names and shapes of the references' AttentiveClassifier state_dict, typed from their modules:
    jepa (src/models/attentive_pooler.py, src/models/utils/modules.py: CrossAttention creates
    xattn.proj) and vjepa2 (same files; CrossAttention has no proj)."""
    shapes = {"pooler.query_tokens": (1, 1, d), "linear.weight": (k, d), "linear.bias": (k,)}
    c = "pooler.cross_attention_block."
    lin = {"xattn.q": (d, d), "xattn.kv": (2 * d, d), "mlp.fc1": (hidden, d), "mlp.fc2": (d, hidden)}
    if layout == "jepa":
        lin["xattn.proj"] = (d, d)
    for name, (o, i) in lin.items():
        shapes[c + name + ".weight"], shapes[c + name + ".bias"] = (o, i), (o,)
    for n in ("norm1", "norm2"):
        shapes[c + n + ".weight"], shapes[c + n + ".bias"] = (d,), (d,)
    for b in range(depth - 1):
        p = f"pooler.blocks.{b}."
        blin = {"attn.qkv": (3 * d, d), "attn.proj": (d, d), "mlp.fc1": (hidden, d), "mlp.fc2": (d, hidden)}
        for name, (o, i) in blin.items():
            shapes[p + name + ".weight"], shapes[p + name + ".bias"] = (o, i), (o,)
        for n in ("norm1", "norm2"):
            shapes[p + n + ".weight"], shapes[p + n + ".bias"] = (d,), (d,)
    return shapes


def reference_state_dict(layout="jepa", depth=1, seed=0, std=0.3, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in sorted(reference_keys(layout, depth).items()):
        v = torch.randn(*shape, generator=g, dtype=torch.float64) * std
        sd[name] = (1 + v if ".norm" in name and name.endswith("weight") else v).to(dtype)
    return sd


# ---- the references' forward, re-typed in float64 numpy (no torch modules involved)
def _ln(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _lin(x, sd, name):
    return x @ sd[name + ".weight"].T + sd[name + ".bias"]


_erf = np.vectorize(math.erf)


def _mlp(x, sd, p):
    h = _lin(x, sd, p + "mlp.fc1")
    return _lin(0.5 * h * (1.0 + _erf(h / math.sqrt(2.0))), sd, p + "mlp.fc2")


def _heads_attend(q, k, v, heads, mask):
    """q [B, n, d], k/v [B, L, d]: per-head softmax(q k^T / sqrt(d_h)) v, keys with mask False dropped."""
    b, n, d = q.shape
    hd = d // heads
    out = np.zeros((b, n, d))
    for i in range(b):
        keep = slice(None) if mask is None else np.flatnonzero(mask[i])
        for h in range(heads):
            s = slice(h * hd, (h + 1) * hd)
            a = q[i, :, s] @ k[i][keep][:, s].T / math.sqrt(hd)
            a = np.exp(a - a.max(-1, keepdims=True))
            out[i, :, s] = (a / a.sum(-1, keepdims=True)) @ v[i][keep][:, s]
    return out


def _self_block(x, sd, p, heads, mask=None):
    d = x.shape[-1]
    qkv = _lin(_ln(x, sd[p + "norm1.weight"], sd[p + "norm1.bias"]), sd, p + "attn.qkv")
    a = _heads_attend(qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:], heads, mask)
    x = x + _lin(a, sd, p + "attn.proj")
    return x + _mlp(_ln(x, sd[p + "norm2.weight"], sd[p + "norm2.bias"]), sd, p)


def reference_logits(sd, x, heads=H, layout="jepa", depth=1, mask=None):
    """jepa: q + xattn(q, LN1(x)) [no proj: jepa's forward never applies it], + MLP(LN2(q)), then the
    blocks on q. vjepa2: the blocks on the tokens first, then the same cross block. Then linear."""
    sd = {k: v.double().numpy() for k, v in sd.items()}
    x = np.asarray(x, dtype=np.float64)
    mask = None if mask is None else np.asarray(mask)
    blocks = [f"pooler.blocks.{i}." for i in range(depth - 1)]
    if layout == "vjepa2":
        for p in blocks:
            x = _self_block(x, sd, p, heads, mask)
    c = "pooler.cross_attention_block."
    q = np.repeat(sd["pooler.query_tokens"], len(x), 0)
    xn = _ln(x, sd[c + "norm1.weight"], sd[c + "norm1.bias"])
    kv = _lin(xn, sd, c + "xattn.kv")
    d = x.shape[-1]
    q = q + _heads_attend(_lin(q, sd, c + "xattn.q"), kv[..., :d], kv[..., d:], heads, mask)
    q = q + _mlp(_ln(q, sd[c + "norm2.weight"], sd[c + "norm2.bias"]), sd, c)
    if layout == "jepa":
        for p in blocks:
            q = _self_block(q, sd, p, heads)
    return _lin(q[:, 0], sd, "linear")


def jepa_state_dict(seed=0):
    return reference_state_dict("jepa", 1, seed)


@pytest.mark.parametrize("layout", ["jepa", "vjepa2"])
@pytest.mark.parametrize("depth", [1, 4])
def test_reference_state_dict_loads_strictly_and_logits_match_float64(layout, depth):
    sd = reference_state_dict(layout, depth, seed=depth, dtype=torch.float64)
    model = AttentiveClassifier(embed_dim=D, num_heads=H, num_classes=K, depth=depth, layout=layout).double()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == reference_keys(layout, depth)
    model.load_state_dict(sd, strict=True)
    x = torch.randn(3, 7, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    mask = torch.tensor([[True] * 7, [True] * 5 + [False] * 2, [False, True] * 3 + [True]])
    for m in (None, mask):
        with torch.no_grad():
            got = model(x, m).numpy()
        ref = reference_logits(sd, x.numpy(), H, layout, depth, None if m is None else m.numpy())
        assert np.abs(got - ref).max() < 1e-9
    # The batch-dict head is the same module: same names, same logits.
    head = AttentiveHead(D, H, num_classes=K, depth=depth, layout=layout).double()
    head.load_state_dict(sd, strict=True)
    torch.testing.assert_close(head({"x": x}), model(x))


def test_jepa_xattn_proj_is_stored_but_not_applied():
    sd = reference_state_dict("jepa", 1)
    model = AttentiveClassifier(embed_dim=D, num_heads=H, num_classes=K)
    model.load_state_dict(sd, strict=True)
    x = torch.randn(2, 5, D)
    before = model(x)
    sd2 = dict(sd, **{"pooler.cross_attention_block.xattn.proj.weight": torch.randn(D, D) * 5})
    model.load_state_dict(sd2, strict=True)
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)
    # a vjepa2 state_dict has no proj and does not load into the jepa layout (strict), nor vice versa
    with pytest.raises(RuntimeError, match="xattn.proj"):
        model.load_state_dict(reference_state_dict("vjepa2", 1), strict=True)
    with pytest.raises(RuntimeError, match="xattn.proj"):
        AttentiveClassifier(embed_dim=D, num_heads=H, num_classes=K, layout="vjepa2").load_state_dict(sd)


def test_layouts_differ_on_deep_probes():
    """Same keys at depth 4, different forward: the layout is a real choice, not a renaming."""
    sd = {k: v for k, v in reference_state_dict("jepa", 4).items() if "xattn.proj" not in k}
    x = torch.randn(2, 6, D)
    a = AttentiveClassifier(embed_dim=D, num_heads=H, num_classes=K, depth=4, layout="vjepa2")
    a.load_state_dict(sd, strict=True)
    b = AttentiveClassifier(embed_dim=D, num_heads=H, num_classes=K, depth=4, layout="jepa")
    b.load_state_dict(sd, strict=False)
    assert (a(x) - b(x)).abs().max() > 1e-2


def test_padding_mask_equals_dropping_the_padded_tokens():
    sd = jepa_state_dict(1)
    model = AttentiveClassifier(embed_dim=D, num_heads=H, num_classes=K)
    model.load_state_dict(sd)
    x = torch.randn(2, 6, D)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    out = model(x, mask)
    torch.testing.assert_close(out[1], model(x[1:, :4])[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.detach().numpy(), reference_logits(sd, x, mask=mask.numpy()), rtol=1e-5, atol=1e-5)
    x2 = x.clone()
    x2[1, 4:] = 1e3  # whatever sits in the padding cannot change the result
    torch.testing.assert_close(model(x2, mask), out)
    # vjepa2's blocks run on the tokens: the mask must hide padding from them as well
    deep = AttentiveClassifier(embed_dim=D, num_heads=H, num_classes=K, depth=3, layout="vjepa2")
    torch.testing.assert_close(deep(x2, mask)[1], deep(x[1:, :4])[0], rtol=1e-5, atol=1e-5)


def _rel_std(w):
    return float(w.detach().std()) / 0.02


@pytest.mark.parametrize("layout,depth", [("jepa", 1), ("jepa", 4), ("vjepa2", 1), ("vjepa2", 4)])
def test_init_follows_each_reference(layout, depth):
    """trunc-normal 0.02, zero biases, unit norms, and each reference's 1/sqrt(2 * layer) rescales:
    jepa rescales xattn.proj and fc2 by sqrt(2) and block i (1-based) by sqrt(2 (i + 1)); vjepa2
    rescales block i (0-based) by sqrt(2 (i + 1)) and the cross block's fc2 by sqrt(2 (depth - 1))."""
    torch.manual_seed(0)
    d = 256
    m = AttentiveClassifier(embed_dim=d, num_heads=4, num_classes=3, depth=depth, layout=layout)
    pool = m.pooler
    blk = pool.cross_attention_block
    assert abs(_rel_std(pool.query_tokens) - 1) < 0.2  # 256 draws
    assert abs(_rel_std(blk.xattn.q.weight) - 1) < 0.03 and abs(_rel_std(blk.xattn.kv.weight) - 1) < 0.03
    assert abs(_rel_std(blk.mlp.fc1.weight) - 1) < 0.03
    if layout == "jepa":
        want = {"cross.fc2": math.sqrt(2), "cross.proj": math.sqrt(2)}
        want.update({f"{i}": math.sqrt(2 * (i + 2)) for i in range(depth - 1)})
        assert abs(_rel_std(blk.xattn.proj.weight) * want["cross.proj"] - 1) < 0.03
    else:
        assert not hasattr(blk.xattn, "proj")
        want = {"cross.fc2": math.sqrt(2 * max(depth - 1, 1))}
        want.update({f"{i}": math.sqrt(2 * (i + 1)) for i in range(depth - 1)})
    assert abs(_rel_std(blk.mlp.fc2.weight) * want["cross.fc2"] - 1) < 0.03
    for i, b in enumerate(pool.blocks or []):
        assert abs(_rel_std(b.attn.proj.weight) * want[f"{i}"] - 1) < 0.03
        assert abs(_rel_std(b.mlp.fc2.weight) * want[f"{i}"] - 1) < 0.03
        assert abs(_rel_std(b.attn.qkv.weight) - 1) < 0.03
    for name, p in m.pooler.named_parameters():
        if name.endswith("bias"):
            assert torch.all(p == 0), name
    assert torch.all(blk.norm1.weight == 1) and torch.all(blk.norm2.bias == 0)


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


@pytest.mark.parametrize("layout,depth", [("jepa", 1), ("jepa", 4), ("vjepa2", 1), ("vjepa2", 4)])
def test_grid_forward_equals_each_head_alone(layout, depth):
    """The batched pass of G stacked heads (one bmm per layer, one fused attention over G * B) gives
    every head's own logits: equal to torch.func.vmap of the module's forward, padding masked."""
    from vidcache.probe.train import stack_heads

    head, params, _ = stack_heads(lambda: AttentiveHead(D, H, depth=depth, num_classes=3, layout=layout), 3, 0,
                                  torch.device("cpu"))
    with torch.no_grad():  # heads that differ
        for v in params.values():
            v.add_(0.1 * torch.randn_like(v))
    x, mask = torch.randn(5, 7, D), torch.ones(5, 7, dtype=torch.bool)
    mask[1, 4:] = False
    batch = {"x": x, "mask": mask}
    ref = torch.func.vmap(lambda p: torch.func.functional_call(head, p, (batch,)))(params)
    got = head.grid_forward(params, batch)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    for g in range(3):  # and each head loaded alone into the plain module
        one = AttentiveHead(D, H, depth=depth, num_classes=3, layout=layout)
        one.load_state_dict({k: v[g] for k, v in params.items()})
        torch.testing.assert_close(got[g], one(batch), rtol=1e-5, atol=1e-5)


def test_vjepa2_grid_trains_each_head_as_alone(make_clusters):
    """Same seed: every head of a 4-block vjepa2 grid ends with the weights and logits it gets when
    trained on its own (clipping and the weight-decay schedule are per head)."""
    tr = make_clusters(24, k=3, d=D, views=3, tokens=2, seed=0)
    va = make_clusters(9, k=3, d=D, views=3, tokens=2, seed=1)
    for d in (tr, va):
        d.spatial = 3
    cfg = AttentiveConfig(num_heads=H, layout="vjepa2", depth=4, epochs=2, batch_size=8, sample="segments",
                          lrs=[1e-3, 1e-2], wds=[0.01, 0.4], final_wd=1e-6, clip_grad=1.0, decay_vectors=True,
                          device="cpu")
    full = AttentiveProbe(cfg).fit(tr, va)
    probs = full.result.scores(segments_per_view(va))
    for i in (1, 3):
        g = cfg.grid()[i]
        alone = AttentiveProbe(dataclasses.replace(cfg, lrs=[g["lr"]], wds=[g["wd"]])).fit(tr, va)
        for name, p in alone.result.params.items():
            torch.testing.assert_close(full.result.params[name][i], p[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(probs[i], alone.result.scores(segments_per_view(va))[0], rtol=1e-4, atol=1e-5)


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


def test_training_leaves_jepa_proj_untouched_and_deep_layouts_fit(make_clusters, tmp_path):
    """jepa's unused proj gets no gradient, so AdamW never moves it (torch skips grad-less params);
    a 2-block probe of each layout learns the clusters and saves a strict-loading state_dict."""
    from safetensors.torch import load_file

    tr = make_clusters(36, k=3, d=D, views=2, tokens=4, seed=0)
    va = make_clusters(12, k=3, d=D, views=2, tokens=4, seed=1)
    for layout in ("jepa", "vjepa2"):
        cfg = AttentiveConfig(num_heads=H, epochs=3, batch_size=16, lrs=[1e-2], wds=[0.5], device="cpu",
                              layout=layout, depth=2)
        p = AttentiveProbe(cfg).fit(tr, va)
        assert p.metrics["val"]["top1"] > 60, layout
        p.save(tmp_path / layout)
        sd = load_file(str(tmp_path / layout / "head.safetensors"))
        fresh = AttentiveClassifier(embed_dim=D, num_heads=H, num_classes=3, depth=2, layout=layout)
        fresh.load_state_dict(sd, strict=True)
        if layout == "jepa":
            torch.manual_seed(cfg.seed)
            init = AttentiveHead(D, H, num_classes=3, depth=2, layout="jepa")
            key = "pooler.cross_attention_block.xattn.proj.weight"
            torch.testing.assert_close(sd[key], init.state_dict()[key], rtol=0, atol=0)


def test_segments_mode_joins_temporal_segments_per_spatial_view():
    """Store clips are temporal-major (t * S + s): segments mode gives S samples per video, each the
    T segments of one spatial view in time order, and the prediction averages softmax over S."""
    from vidcache.probe.attentive import segments_per_view
    from vidcache.probe.data import ProbeData

    t, s, l = 2, 3, 2
    x = np.zeros((1, t * s, l, 1), np.float32)
    for ti in range(t):
        for si in range(s):
            x[0, ti * s + si, :, 0] = [100 * si + 10 * ti + j for j in range(l)]
    mask = np.ones(x.shape[:3], bool)
    mask[0, 1 * s + 2, 1] = False  # segment 1 of spatial view 2, its last token
    d = segments_per_view(ProbeData(x, np.zeros(1), mask=mask, spatial=s))
    assert d.x.shape == (1, s, t * l, 1) and d.spatial == 1
    np.testing.assert_array_equal(d.x[0, 2, :, 0], [200, 201, 210, 211])
    np.testing.assert_array_equal(d.x[0, 0, :, 0], [0, 1, 10, 11])
    np.testing.assert_array_equal(d.mask[0, 2], [True, True, True, False])
    with pytest.raises(Exception, match="spatial views"):
        segments_per_view(ProbeData(x[:, :5], np.zeros(1), spatial=s))


def _jepa_1d_sincos(embed_dim, grid_size):
    """facebookresearch/jepa src/models/utils/pos_embs.py get_1d_sincos_pos_embed, re-typed (float64)."""
    omega = np.arange(embed_dim // 2, dtype=float)
    omega /= embed_dim / 2.0
    omega = 1.0 / 10000 ** omega
    out = np.einsum("m,d->md", np.arange(grid_size, dtype=float), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def test_segments_pos_embed_equals_jepa_clip_aggregation():
    """ClipAggregation(use_pos_embed=True, attend_across_segments=True) of jepa's
    evals/video_classification_frozen/utils.py, re-typed in float64 for one spatial view at a time:
    tokens [B, T, N, D] of each segment concatenated in time, plus pos_embed[clip_indices[:, ::tubelet]]
    repeated over the N spatial tokens. The clip indices are the extraction's (`vjepa:` sampling,
    pinned to jepa's loader by tests/extract/test_sampling.py); vidcache rebuilds them from the boxes."""
    from vidcache.extract.sampling import boxes, plan_clips
    from vidcache.probe.attentive import segments_per_view
    from vidcache.probe.data import ProbeData, token_frame_positions

    segs, views, clip_len, tubelet, n_sp, dim, num_frames = 4, 3, 16, 2, 3, 8, 300
    specs = plan_clips(f"vjepa:{segs}x{views}:0", num_frames, 90, 120, clip_len, 4, video_index=5, size=32)
    t_tok = clip_len // tubelet
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, segs * views, t_tok * n_sp, dim))
    pos = token_frame_positions(boxes(specs)[None], np.array([num_frames]), clip_len, t_tok)
    got = segments_per_view(ProbeData(x, np.zeros(1), extras={"frame_pos": pos}, spatial=views), pos_embed=True)
    table = _jepa_1d_sincos(dim, 10000 // tubelet)
    for v in range(views):
        clips = [t * views + v for t in range(segs)]
        outputs = np.concatenate([x[0, c].reshape(t_tok, n_sp, dim) for c in clips], axis=0).reshape(-1, dim)
        clip_indices = [np.asarray(specs[c].frame_indices)[::tubelet] for c in clips]
        pe = np.concatenate([table[ci] for ci in clip_indices], axis=0)  # [T * segments, D]
        want = outputs + np.repeat(pe[:, None, :], n_sp, axis=1).reshape(-1, dim)
        assert np.abs(got.x[0, v] - want).max() < 1e-9
    for c, spec in enumerate(specs):  # every window fits its partition: the rebuilt indices are the sampled ones
        np.testing.assert_array_equal(pos[0, c], np.asarray(spec.frame_indices)[::tubelet])
    # a video shorter than the window repeats frames; its positions spread over the frames it has
    short = plan_clips("vjepa:2x1:0", 40, 90, 120, clip_len, 4, size=32)
    sp = token_frame_positions(boxes(short)[None], np.array([40]), clip_len, t_tok)[0]
    for spec, p in zip(short, sp):
        f = np.asarray(spec.frame_indices)
        assert p[0] == f.min() and p.max() <= f.max() and (np.diff(p) >= 0).all()
    without = segments_per_view(ProbeData(x, np.zeros(1), spatial=views))
    assert np.abs(got.x - without.x).max() > 0.5  # the embedding is there
    with pytest.raises(Exception, match="positions=True"):
        segments_per_view(ProbeData(x, np.zeros(1), spatial=views), pos_embed=True)


def test_segments_probe_equals_clip_probe_on_regrouped_tokens(make_clusters, monkeypatch):
    """The segments mode is the clip mode on regrouped tokens: same training, same probabilities."""
    from vidcache.probe.attentive import segments_per_view

    tr = make_clusters(24, k=2, d=D, views=4, tokens=2, seed=0)
    va = make_clusters(8, k=2, d=D, views=4, tokens=2, seed=1)
    tr.spatial = va.spatial = 2
    kw = dict(num_heads=H, epochs=2, batch_size=8, device="cpu")
    a = AttentiveProbe(AttentiveConfig(sample="segments", **kw)).fit(tr, va)
    b = AttentiveProbe(AttentiveConfig(sample="clip", **kw)).fit(segments_per_view(tr), segments_per_view(va))
    np.testing.assert_allclose(a.predict(va), b.predict(segments_per_view(va)), rtol=1e-6, atol=1e-7)
    # fit's val metrics score the split as given (regrouped once, softmax over the spatial views)
    prepared = []
    real_prepare = AttentiveProbe.prepare

    def prepare_once(self, data):
        assert all(data is not p for p in prepared), "a split was prepared twice (views regrouped again)"
        out = real_prepare(self, data)
        prepared.append(out)
        return out

    monkeypatch.setattr(AttentiveProbe, "prepare", prepare_once)
    AttentiveProbe(AttentiveConfig(sample="segments", **kw)).fit(tr, va)
    monkeypatch.undo()
    assert len(prepared) >= 2
    probs = a.result.scores(segments_per_view(va), [a.result.best])[0]
    assert a.metrics["val"]["top1"] == classification_metrics(probs, va.y)["top1"]
    assert a.metrics["val"]["top1"] == a.result.val[a.result.best]["top1"]
    assert a.predict(va).shape == (8, 2)
