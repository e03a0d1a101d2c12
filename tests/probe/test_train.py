import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from vidcache.errors import ConfigError
from vidcache.probe.config import AttentiveConfig
from vidcache.probe.data import ProbeData
from vidcache.probe.linear import LinearConfig, LinearHead, LinearProbe
from vidcache.probe.mlp import MLPConfig, MLPHead
from vidcache.probe.train import (
    GridOptimizer,
    Standardizer,
    TrainConfig,
    grid_scores,
    schedules,
    select_best,
    train_grid,
)
from vidcache.schedule import warmup_cosine

TOL = dict(rtol=1e-4, atol=1e-5)


def cfg(**kw):
    return TrainConfig(**{"epochs": 3, "batch_size": 16, "warmup_epochs": 1.0, "device": "cpu", **kw})


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_linear_bank_head_equals_head_trained_alone(make_clusters, optimizer):
    tr, va = make_clusters(40, k=3, d=6), make_clusters(12, k=3, d=6, seed=1)
    c = cfg(optimizer=optimizer, lrs=[1e-3, 3e-2], wds=[0.0, 0.1])
    grid = c.grid()
    full = train_grid(lambda: LinearHead(6, 3), grid, tr, va, c)
    for i in (0, 3):
        alone = train_grid(lambda: LinearHead(6, 3), [grid[i]], tr, va, c)
        for name, p in alone.params.items():
            torch.testing.assert_close(full.params[name][i], p[0], **TOL)
        assert full.val[i]["top1"] == alone.val[0]["top1"]


def test_vmap_path_head_equals_head_trained_alone(make_clusters):
    tr, va = make_clusters(30, k=3, d=5), make_clusters(9, k=3, d=5, seed=1)
    c = cfg(lrs=[1e-3, 1e-2], wds=[0.01, 0.3])
    grid = c.grid()
    make = lambda: MLPHead(5, 3, hidden=7, depth=2)  # noqa: E731
    full = train_grid(make, grid, tr, va, c)
    alone = train_grid(make, [grid[2]], tr, va, c)
    for name, p in alone.params.items():
        torch.testing.assert_close(full.params[name][2], p[0], **TOL)


def test_grid_optimizer_matches_torch_optimizers():
    torch.manual_seed(0)
    w0 = torch.randn(4, 3)
    b0 = torch.randn(4)
    x, y = torch.randn(10, 3), torch.randint(0, 4, (10,))
    for kind in ("adamw", "sgd"):
        ref = nn.Linear(3, 4)
        with torch.no_grad():
            ref.weight.copy_(w0)
            ref.bias.copy_(b0)
        # torch's decay applies to the weight only, as the grid optimiser's rule (matrices only) does
        groups = [{"params": [ref.weight], "weight_decay": 0.05}, {"params": [ref.bias], "weight_decay": 0.0}]
        opt = (torch.optim.AdamW(groups, lr=0.01) if kind == "adamw"
               else torch.optim.SGD(groups, lr=0.01, momentum=0.9))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total=6, warmup=2, peak=1.0))
        w, b = w0[None].clone().requires_grad_(), b0[None].clone().requires_grad_()
        gopt = GridOptimizer([w, b], [0.01], [0.05], kind)
        for step in range(6):
            opt.zero_grad()
            nn.functional.cross_entropy(ref(x), y).backward()
            opt.step()
            sched.step()
            loss = nn.functional.cross_entropy(x @ w[0].t() + b[0], y)
            gopt.step(list(torch.autograd.grad(loss, [w, b])), warmup_cosine(step, total=6, warmup=2, peak=1.0))
        torch.testing.assert_close(w[0].detach(), ref.weight.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(b[0].detach(), ref.bias.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layout", ["jepa", "vjepa2"])
def test_grid_optimizer_matches_the_references_probe_optimisation(layout):
    """jepa's eval (evals/video_classification_frozen/eval.py): AdamW, decay on non-bias, non-1-D
    parameters, weight decay by CosineWDSchedule 0.01 -> 1e-6, lr by WarmupCosineSchedule (both stepped
    before the iteration), clip_grad_norm_(1.0). vjepa2's: one group (every parameter decayed),
    constant weight decay, no clipping. Each head of a 2-head grid equals its own torch run."""
    torch.manual_seed(0)
    x, y = torch.randn(12, 5) * 30, torch.randint(0, 3, (12,))  # large inputs: the norms exceed 1
    steps, lrs, wds = 6, [0.05, 0.01], [0.01, 0.4]
    jepa = layout == "jepa"
    final_wd = 1e-6 if jepa else None
    make = lambda: MLPHead(5, 3, hidden=4, depth=1)  # noqa: E731
    torch.manual_seed(1)
    head0 = make()
    names = [n for n, _ in head0.named_parameters()]
    stacked = [p.detach()[None].repeat(2, *([1] * p.ndim)).requires_grad_() for p in head0.parameters()]
    gopt = GridOptimizer(stacked, lrs, wds, "adamw", decay_vectors=not jepa, clip=1.0 if jepa else 0.0)
    refs, opts = [], []
    for lr, wd in zip(lrs, wds):
        ref = make()
        ref.load_state_dict(head0.state_dict())
        if jepa:
            decay = [p for n, p in ref.named_parameters() if "bias" not in n and p.ndim != 1]
            keep = [p for n, p in ref.named_parameters() if "bias" in n or p.ndim == 1]
            groups = [{"params": decay}, {"params": keep, "WD_exclude": True, "weight_decay": 0}]
        else:
            groups = [{"params": list(ref.parameters())}]
        refs.append(ref)
        opts.append(torch.optim.AdamW(groups))
    clipped = 0
    for k in range(steps):
        for ref, opt, lr, wd in zip(refs, opts, lrs, wds):
            t = k + 1  # the references' schedulers count before computing
            for g in opt.param_groups:
                g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * t / steps))  # warmup 0, final_lr 0
                if not g.get("WD_exclude"):
                    g["weight_decay"] = (final_wd + (wd - final_wd) * 0.5 * (1 + math.cos(math.pi * t / steps))
                                         if jepa else wd)
            opt.zero_grad()
            nn.functional.cross_entropy(ref({"x": x}), y).backward()
            if jepa:
                clipped += float(torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0)) > 1.0
            opt.step()
        params = dict(zip(names, stacked))
        logits = torch.func.vmap(lambda p: torch.func.functional_call(head0, p, ({"x": x},)))(params)
        loss = sum(nn.functional.cross_entropy(logits[i], y) for i in range(2))
        cfg = AttentiveConfig(final_wd=final_wd, lrs=lrs, wds=wds)
        factor, step_wds = schedules(k, steps, 0, [{"lr": a, "wd": b} for a, b in zip(lrs, wds)], cfg)
        gopt.step(list(torch.autograd.grad(loss, stacked)), factor, step_wds)
    assert clipped >= 6 or not jepa  # clipping was active
    for i, ref in enumerate(refs):
        for p, (n, r) in zip(stacked, ref.named_parameters()):
            torch.testing.assert_close(p[i].detach(), r.detach(), rtol=1e-5, atol=1e-6, msg=n)


def test_selection_uses_val_never_test(make_clusters):
    """Test labels are shifted by one class: the head that learnt best (val-best) is the worst on test,
    an untrained-looking head is test-best. The probe must pick, and report, the val-best one."""
    tr, va = make_clusters(60, k=3, d=6, noise=0.5), make_clusters(30, k=3, d=6, seed=1, noise=0.5)
    te = make_clusters(30, k=3, d=6, seed=2, noise=0.5)
    te.y = (te.y + 1) % 3
    c = LinearConfig(epochs=4, batch_size=16, lrs=[1e-6, 3e-2], wds=[0.0], device="cpu", standardize=True)
    probe = LinearProbe(c).fit(tr, va)
    r = probe.result
    test_acc = [float((s.argmax(1) == te.y).mean() * 100) for s in r.scores(te)]
    val_best, test_best = r.best, int(np.argmax(test_acc))
    assert val_best == 1 and test_best == 0 and val_best != test_best
    assert probe.evaluate(te)["top1"] == pytest.approx(test_acc[1])


def test_select_best_breaks_ties_on_nll_and_skips_diverged():
    val = [{"top1": 50.0, "nll": 1.0}, {"top1": 50.0, "nll": 0.5}, {"top1": float("nan"), "nll": float("nan")}]
    assert select_best(val) == 1
    assert select_best([{"top1": float("nan"), "nll": float("nan")}, {"top1": 1.0, "nll": 9.0}]) == 1


def test_multiview_averages_softmax_not_logits():
    # Identity head, 3 views: mean of logits favours class 0, mean of softmax favours class 1.
    head = LinearHead(2, 2)
    params = {"fc.weight": torch.eye(2)[None], "fc.bias": torch.zeros(1, 2)}
    x = np.array([[[3.0, 0.0], [0.0, 1.0], [0.0, 1.0]]], np.float32)
    data = ProbeData(x, np.array([1]))
    probs = grid_scores(head, params, {}, data, Standardizer.identity(2), "clip", torch.device("cpu"))[0, 0]
    expected = torch.softmax(torch.from_numpy(x[0]), -1).mean(0)
    torch.testing.assert_close(probs, expected)
    assert probs.argmax() == 1 and x[0].mean(0).argmax() == 0


def test_seed_gives_bit_identical_results_and_grid_chunk_does_not_matter(make_clusters):
    tr, va = make_clusters(40, k=3, d=6), make_clusters(12, k=3, d=6, seed=1)
    c = cfg(lrs=[1e-3, 1e-2], wds=[0.0, 0.1], seed=7)
    a = train_grid(lambda: LinearHead(6, 3), c.grid(), tr, va, c)
    b = train_grid(lambda: LinearHead(6, 3), c.grid(), tr, va, c)
    for k in a.params:
        assert torch.equal(a.params[k], b.params[k])
    chunked = train_grid(lambda: LinearHead(6, 3), c.grid(), tr, va, dataclasses.replace(c, grid_chunk=3))
    for k in a.params:
        torch.testing.assert_close(a.params[k], chunked.params[k], **TOL)
    other = train_grid(lambda: LinearHead(6, 3), c.grid(), tr, va, dataclasses.replace(c, seed=8))
    assert not torch.equal(a.params["fc.weight"], other.params["fc.weight"])


def test_standardizer_is_fitted_on_train_only(make_clusters):
    tr = make_clusters(50, d=4)
    s = Standardizer.fit(tr)
    flat = tr.x.reshape(-1, 4).astype(np.float64)
    np.testing.assert_allclose(s.mean, flat.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s.std, flat.std(0), rtol=1e-5)


def test_pool_mean_trains_on_video_means(make_clusters):
    tr, va = make_clusters(30, k=3, d=6), make_clusters(12, k=3, d=6, seed=1)
    p = LinearProbe(LinearConfig(epochs=2, batch_size=8, pool="mean", lrs=[1e-2], wds=[0.0], device="cpu"))
    p.fit(tr, va)
    assert p.info["num_train"] == 30
    torch.testing.assert_close(torch.from_numpy(p.result.norm.mean),
                               torch.from_numpy(tr.x.mean(1).mean(0)), rtol=1e-5, atol=1e-6)


def test_config_validation_reports_every_problem():
    from vidcache.config import check

    with pytest.raises(ConfigError) as e:
        check(LinearConfig(lrs=[], wds=[-1], optimizer="lamb", epochs=0, pool="max", schedule_rule="keras",
                           final_wd=-1.0, clip_grad=-1.0))
    assert e.value.problems == [
        "lrs must be a non-empty list of positive numbers, got []",
        "wds must be a non-empty list of numbers >= 0, got [-1]",
        "optimizer must be adamw or sgd, got 'lamb'",
        "epochs must be >= 1, got 0",
        "warmup_epochs must be in [0, epochs], got 1.0",  # the default 1 epoch is longer than 0 epochs
        "schedule_rule must be one of torch, jepa, got 'keras'",
        "final_wd must be >= 0 (or none for a constant weight decay), got -1.0",
        "clip_grad must be >= 0 (0 = no clipping), got -1.0",
        "pool must be none or mean, got 'max'",
    ]
    ok = LinearConfig()
    assert check(ok) is ok


def test_mlp_head_shapes():
    h = MLPHead(5, 3, hidden=7, depth=3)
    assert h({"x": torch.randn(2, 5)}).shape == (2, 3)
    assert sum(isinstance(m, nn.Linear) for m in h.modules()) == 4
    assert MLPConfig(depth=0).validate()
