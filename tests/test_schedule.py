"""vidcache.schedule, pinned: hand-computed values at named steps for each rule, and parity with
re-typed float64 copies of the references' schedulers stepped as the references step them."""

import math
from types import SimpleNamespace

import pytest

from vidcache.schedule import RULES, cosine, linear, position, warmup_cosine

WC = dict(total=110, warmup=10, peak=1.0, start=0.0, final=0.1)


@pytest.mark.parametrize("step,rule,value", [
    # torch: step k reads t = k. Warm-up t / 10, then 0.1 + 0.9 * (1 + cos(pi (t - 10) / 100)) / 2.
    (0, "torch", 0.0), (5, "torch", 0.5), (9, "torch", 0.9), (10, "torch", 1.0),
    (60, "torch", 0.55), (110, "torch", 0.1), (500, "torch", 0.1),
    # jepa: step k reads t = k + 1, so every value comes one step earlier.
    (0, "jepa", 0.1), (4, "jepa", 0.5), (9, "jepa", 1.0), (59, "jepa", 0.55), (109, "jepa", 0.1),
])
def test_warmup_cosine_golden(step, rule, value):
    assert warmup_cosine(step, rule=rule, **WC) == pytest.approx(value, abs=1e-12)


def test_warmup_from_start_and_fractional_warmup():
    # start 0.2 -> peak 1.0 over 4 steps: t = 2 is half-way, 0.6
    assert warmup_cosine(2, total=20, warmup=4, peak=1.0, start=0.2) == pytest.approx(0.6)
    assert warmup_cosine(1, total=20, warmup=4, peak=1.0, start=0.2, rule="jepa") == pytest.approx(0.6)
    # SCALE: warm-up 5 % of 30 steps = 1.5 steps, unrounded: 0, 1/1.5, then the cosine from t = 1.5
    kw = dict(total=30, warmup=1.5, peak=3e-4)
    assert warmup_cosine(0, **kw) == 0.0
    assert warmup_cosine(1, **kw) == pytest.approx(2e-4)
    assert warmup_cosine(2, **kw) == pytest.approx(3e-4 * 0.5 * (1 + math.cos(math.pi * 0.5 / 28.5)))
    assert warmup_cosine(2, **kw) == pytest.approx(2.99772e-4, abs=1e-9)


def test_no_warmup_cosine_golden():
    # 4 steps, peak 1, final 0: cos at t / 4 = 0, 1/4, 1/2, 3/4, 1 -> 1, 0.853553, 0.5, 0.146447, 0
    torch_vals = [warmup_cosine(k, total=4, warmup=0, peak=1.0) for k in range(4)]
    jepa_vals = [warmup_cosine(k, total=4, warmup=0, peak=1.0, rule="jepa") for k in range(4)]
    assert torch_vals == pytest.approx([1.0, 0.8535534, 0.5, 0.1464466], abs=1e-7)
    assert jepa_vals == pytest.approx([0.8535534, 0.5, 0.1464466, 0.0], abs=1e-7)


def test_cosine_and_linear_golden():
    # jepa's eval weight decay: 0.01 -> 1e-6 over 10 steps; half-way is the mean
    assert cosine(4, total=10, start=0.01, final=1e-6, rule="jepa") == pytest.approx(0.0050005)
    assert cosine(5, total=10, start=0.01, final=1e-6) == pytest.approx(0.0050005)
    assert cosine(0, total=10, start=0.01, final=1e-6) == 0.01
    assert cosine(9, total=10, start=0.01, final=1e-6, rule="jepa") == pytest.approx(1e-6)
    # rising (V-JEPA pretraining 0.04 -> 0.4), held at the end
    assert cosine(5, total=10, start=0.04, final=0.4) == pytest.approx(0.22)
    assert cosine(50, total=10, start=0.04, final=0.4) == pytest.approx(0.4)
    assert linear(50, total=100, start=0.998, final=1.0) == pytest.approx(0.999)
    assert linear(200, total=100, start=0.998, final=1.0) == 1.0
    assert [position(3, r) for r in RULES] == [3, 4]
    with pytest.raises(ValueError, match="schedule rule must be one of torch, jepa"):
        warmup_cosine(0, total=1, warmup=0, peak=1.0, rule="keras")


# ---------------------------------------------------------------- the references, re-typed in float64

class JepaWarmupCosine:
    """facebookresearch/jepa src/utils/schedulers.py WarmupCosineSchedule (step() counts first)."""

    def __init__(self, warmup_steps, start_lr, ref_lr, T_max, final_lr=0.0):
        self.start_lr, self.ref_lr, self.final_lr = start_lr, ref_lr, final_lr
        self.warmup_steps, self.T_max, self._step = warmup_steps, T_max - warmup_steps, 0.0

    def step(self):
        self._step += 1
        if self._step < self.warmup_steps:
            progress = float(self._step) / float(max(1, self.warmup_steps))
            return self.start_lr + progress * (self.ref_lr - self.start_lr)
        progress = float(self._step - self.warmup_steps) / float(max(1, self.T_max))
        return max(self.final_lr, self.final_lr + (self.ref_lr - self.final_lr) * 0.5 * (1.0 + math.cos(math.pi * progress)))


class JepaCosineWD:
    """facebookresearch/jepa src/utils/schedulers.py CosineWDSchedule."""

    def __init__(self, ref_wd, T_max, final_wd=0.0):
        self.ref_wd, self.final_wd, self.T_max, self._step = ref_wd, final_wd, T_max, 0.0

    def step(self):
        self._step += 1
        progress = self._step / self.T_max
        new_wd = self.final_wd + (self.ref_wd - self.final_wd) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return max(self.final_wd, new_wd) if self.final_wd <= self.ref_wd else min(self.final_wd, new_wd)


def scale_lambda(k, T_max, w):
    """Separius/SCALE src/train.py warm_up_cosine_lr_scheduler's lambda (eta_min 0), read at k."""
    return (k / w) if k <= w else 0.5 * (math.cos((k - w) / (T_max - w) * math.pi) + 1)


@pytest.mark.parametrize("warmup,start_lr,ref_lr,final_lr,total", [
    (0, 1e-3, 1e-3, 0.0, 40),           # jepa configs/evals/vitl16_k400_16x8x3.yaml (warmup 0, start = lr)
    (6, 2e-4, 6.25e-4, 1e-6, 37),       # jepa configs/pretrain/vitl16.yaml shape: warm-up from start_lr
    (1, 0.0, 1.0, 0.1, 3),
])
def test_jepa_rule_equals_jepa_schedulers_step_sequence(warmup, start_lr, ref_lr, final_lr, total):
    lr_ref, wd_ref = JepaWarmupCosine(warmup, start_lr, ref_lr, total, final_lr), JepaCosineWD(0.04, total, 0.4)
    for k in range(total):  # the reference steps its schedulers before iteration k's forward
        lr, wd = lr_ref.step(), wd_ref.step()
        assert abs(warmup_cosine(k, total=total, warmup=warmup, peak=ref_lr, start=start_lr, final=final_lr,
                                 rule="jepa") - lr) < 1e-15
        assert abs(cosine(k, total=total, start=0.04, final=0.4, rule="jepa") - wd) < 1e-15


@pytest.mark.parametrize("total,frac", [(200, 0.05), (31, 0.05), (10, 0.3)])
def test_torch_rule_equals_scale_lambdalr(total, frac):
    w = frac * total  # the reference's warm_up_iterations, a float
    for k in range(total):  # LambdaLR stepped after optimizer.step(): iteration k reads lambda(k)
        assert abs(warmup_cosine(k, total=total, warmup=w, peak=1.0) - scale_lambda(k, total, w)) < 1e-12


def test_torch_rule_equals_cosine_annealing_lr():
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 50, eta_min=0)  # dinov2/eval/linear.py
    for k in range(50):
        assert abs(warmup_cosine(k, total=50, warmup=0, peak=0.1) - opt.param_groups[0]["lr"]) < 1e-12
        opt.step()
        sched.step()


def test_callers_read_their_references_rule():
    from vidcache.pretrain.config import PretrainConfig
    from vidcache.pretrain.vjepa import VJEPAObjective
    from vidcache.probe.config import AttentiveConfig
    from vidcache.probe.train import schedules

    # V-JEPA pretraining: jepa app/vjepa/train.py steps lr / wd schedulers before each iteration
    cfg = PretrainConfig(codes="c", out="o", steps=40, warmup=0.15, schedule_scale=1.25)
    total = int(round(40 * 1.25))
    lr_ref = JepaWarmupCosine(int(round(0.15 * 40)), cfg.start_lr, cfg.lr, total, cfg.final_lr)
    wd_ref = JepaCosineWD(cfg.weight_decay, total, cfg.final_weight_decay)
    for k in range(40):
        got = VJEPAObjective.schedules(SimpleNamespace(cfg=cfg), k)
        assert got["lr"] == pytest.approx(lr_ref.step(), abs=1e-15)
        assert got["wd"] == pytest.approx(wd_ref.step(), abs=1e-15)
        assert got["momentum"] == pytest.approx(cfg.ema[0] + k * (cfg.ema[1] - cfg.ema[0]) / total)
    # the jepa probe eval: lr 1e-3 no warm-up, wd 0.01 -> 1e-6 (eval.py init_opt's final_wd default)
    pc = AttentiveConfig(final_wd=1e-6)
    grid = [{"lr": 1e-3, "wd": 0.01}, {"lr": 1e-3, "wd": 0.1}]
    lr_ref = JepaWarmupCosine(0, 1e-3, 1e-3, 12, 0.0)
    wd_refs = [JepaCosineWD(0.01, 12, 1e-6), JepaCosineWD(0.1, 12, 1e-6)]
    for k in range(12):
        factor, wds = schedules(k, 12, 0, grid, pc)
        assert 1e-3 * factor == pytest.approx(lr_ref.step(), abs=1e-15)
        assert wds == pytest.approx([r.step() for r in wd_refs], abs=1e-15)
    assert schedules(3, 12, 0, grid, AttentiveConfig())[1] is None  # no final_wd: constant weight decay
