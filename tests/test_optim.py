"""Tests for the hand-written optimizers in src/optim.py.

The central check runs each optimizer for 50 steps on a fixed random gradient sequence
and compares with an independent float64 transcription of the tutorial's formula.
"""

import copy
import io
import math
import warnings
from pathlib import Path

import hydra
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import nn

from src.optim import SGD, Adam, SGDMomentum

CONF = Path(__file__).resolve().parents[1] / "conf"
SHAPES = [(7,), (5, 3), (4, 3, 2), (64, 32), (1,)]
N_STEPS = 50
TOL = 1e-6
# Ours vs torch.optim: two float32 implementations that round differently (our per-parameter
# path is the tutorial's literal arithmetic, torch fuses ops), each within TOL of the exact
# float64 result (test_matches_float64_reference), so they may differ by up to 2 TOL.
TOL_VS_TORCH = 2 * TOL


def rel_err(a: torch.Tensor, b: torch.Tensor, start: torch.Tensor | None = None) -> float:
    """max|a - b| / max|b|, in float64 (tiny floor for an all-zero b).

    float32 rounding error scales with the magnitude of the values the run went through,
    not with where it ended: a 1-element param that travels from 1.0 to 0.07 carries
    errors of ulp(1.0). Pass ``start`` to measure relative to max(|b|, |start|).
    """
    a, b = a.double(), b.double()
    scale = b.abs().max()
    if start is not None:
        scale = torch.maximum(scale, start.double().abs().max())
    return ((a - b).abs().max() / scale.clamp_min(1e-30)).item()


# -----------------------------------------------------------------------------
# float64 references, written straight from the tutorial's equations


def ref_sgd(w, grads, lr, wd, **_):
    for g in grads:
        g = g + wd * w
        w = w - lr * g
    return w


def ref_sgd_momentum(w, grads, lr, wd, momentum, **_):
    m = torch.zeros_like(w)
    for g in grads:
        g = g + wd * w
        m = momentum * m + (1 - momentum) * g
        w = w - lr * m
    return w


def ref_adam(w, grads, lr, wd, betas, eps, **_):
    b1, b2 = betas
    m, v = torch.zeros_like(w), torch.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        g = g + wd * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        w = w - lr * m_hat / (torch.sqrt(v_hat) + eps)
    return w


# (class, reference, hyper-parameters shared by both groups, lr of group 0)
CASES = {
    "sgd": (SGD, ref_sgd, {}, 0.1),
    "sgd_mom": (SGDMomentum, ref_sgd_momentum, {"momentum": 0.9}, 0.1),
    "adam": (Adam, ref_adam, {"betas": (0.9, 0.999), "eps": 1e-8}, 1e-2),
}


def make_problem(seed=0, dtype=torch.float32):
    """Random params and a fixed sequence of random gradients for them."""
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=gen, dtype=dtype) for s in SHAPES]
    grads = []
    for step in range(N_STEPS):
        # scales 1e-2 .. 10 across steps, so Adam's normalisation and bias correction matter
        scale = 10.0 ** (step % 4 - 2)
        grads.append([torch.randn(s, generator=gen, dtype=dtype) * scale for s in SHAPES])
    return params, grads


def param_groups(params, lr, hyper):
    # group 0: lr, no weight decay; group 1: half the lr and L2 weight decay
    return [
        {"params": params[:2], "lr": lr, "weight_decay": 0.0, **hyper},
        {"params": params[2:], "lr": lr / 2, "weight_decay": 0.01, **hyper},
    ]


def run(opt_factory, params0, grads):
    params = [nn.Parameter(p.clone()) for p in params0]
    opt = opt_factory(params)
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.clone()
        opt.step()
    return [p.detach() for p in params], opt


def group_settings(i, lr):
    return (lr, 0.0) if i < 2 else (lr / 2, 0.01)


# -----------------------------------------------------------------------------
# formula


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("name", list(CASES))
def test_matches_float64_reference(name, foreach):
    cls, ref, hyper, lr = CASES[name]
    params0, grads = make_problem()
    ours, _ = run(lambda ps: cls(param_groups(ps, lr, hyper), foreach=foreach), params0, grads)
    for i, (p0, p) in enumerate(zip(params0, ours, strict=True)):
        lr_i, wd_i = group_settings(i, lr)
        expected = ref(p0.double(), [g[i].double() for g in grads], lr=lr_i, wd=wd_i, **hyper)
        assert (expected - p0.double()).abs().max() > 1e-2  # the params really moved
        assert rel_err(p, expected, start=p0) <= TOL, f"param {i} shape {tuple(p.shape)}"


@pytest.mark.parametrize("name", list(CASES))
def test_foreach_equals_per_parameter(name):
    cls, _, hyper, lr = CASES[name]
    params0, grads = make_problem(seed=1)
    fast, opt_fast = run(lambda ps: cls(param_groups(ps, lr, hyper), foreach=True), params0, grads)
    slow, opt_slow = run(lambda ps: cls(param_groups(ps, lr, hyper), foreach=False), params0, grads)
    for p0, a, b in zip(params0, fast, slow, strict=True):
        assert rel_err(a, b, start=p0) <= TOL
    # and the optimizer state agrees too
    for sa, sb in zip(opt_fast.state.values(), opt_slow.state.values(), strict=True):
        for key in sa:
            if torch.is_tensor(sa[key]):
                assert rel_err(sa[key], sb[key]) <= TOL, key
            else:
                assert sa[key] == sb[key]


@pytest.mark.parametrize("name", list(CASES))
def test_foreach_mixed_dtypes(name):
    """One group holding float32 and float64 params: foreach buckets by (device, dtype)."""
    cls, _, hyper, lr = CASES[name]
    params0, grads = make_problem(seed=2)
    to64 = {1, 3}  # cast some params (and their grads) to float64
    params0 = [p.double() if i in to64 else p for i, p in enumerate(params0)]
    grads = [[g.double() if i in to64 else g for i, g in enumerate(gs)] for gs in grads]
    fast, _ = run(lambda ps: cls(ps, lr=lr, foreach=True, **hyper), params0, grads)
    slow, _ = run(lambda ps: cls(ps, lr=lr, foreach=False, **hyper), params0, grads)
    for i, (p0, a, b) in enumerate(zip(params0, fast, slow, strict=True)):
        assert a.dtype == (torch.float64 if i in to64 else torch.float32)
        assert rel_err(a, b, start=p0) <= TOL


def literal_tutorial_steps(name, w, grads, lr, wd, momentum=0.9, betas=(0.9, 0.999), eps=1e-8):
    """The tutorial's update_param expressions verbatim (weight decay, if any, first as
    g = g + wd * p), in the parameter's own dtype: the per-parameter path must match it
    bit for bit (the loss-surface playground relies on that, its SGD run is chaotic)."""
    b1, b2 = betas
    m, v = torch.zeros_like(w), torch.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        if wd != 0:
            g = g + wd * w
        if name == "sgd":
            p_update = -lr * g
        elif name == "sgd_mom":
            m = (1 - momentum) * g + momentum * m
            p_update = -lr * m
        else:
            m = (1 - b1) * g + b1 * m
            v = (1 - b2) * (g) ** 2 + b2 * v
            p_2nd_mom = v / (1 - b2**t)
            p_mom = m / (1 - b1**t)
            p_lr = lr / (torch.sqrt(p_2nd_mom) + eps)
            p_update = -p_lr * p_mom
        w = w.clone()
        w.add_(p_update)
    return w


@pytest.mark.parametrize("name", list(CASES))
def test_per_parameter_path_is_the_tutorials_arithmetic(name):
    cls, _, hyper, lr = CASES[name]
    params0, grads = make_problem(seed=6)
    ours, _ = run(lambda ps: cls(param_groups(ps, lr, hyper), foreach=False), params0, grads)
    for i, (p0, p) in enumerate(zip(params0, ours, strict=True)):
        lr_i, wd_i = group_settings(i, lr)
        expected = literal_tutorial_steps(name, p0, [g[i] for g in grads], lr=lr_i, wd=wd_i)
        assert torch.equal(p, expected), f"param {i} shape {tuple(p.shape)}"


# -----------------------------------------------------------------------------
# against torch.optim


@pytest.mark.parametrize("foreach", [True, False])
def test_adam_matches_torch_adam(foreach):
    params0, grads = make_problem(seed=3)
    hyper = {"betas": (0.9, 0.999), "eps": 1e-8}
    ours, _ = run(lambda ps: Adam(param_groups(ps, 1e-2, hyper), foreach=foreach), params0, grads)
    ref, _ = run(
        lambda ps: torch.optim.Adam(param_groups(ps, 1e-2, hyper), foreach=True), params0, grads
    )
    for p0, a, b in zip(params0, ours, ref, strict=True):
        assert rel_err(a, b, start=p0) <= TOL_VS_TORCH


@pytest.mark.parametrize("foreach", [True, False])
def test_sgd_matches_torch_sgd(foreach):
    params0, grads = make_problem(seed=4)
    ours, _ = run(lambda ps: SGD(param_groups(ps, 0.1, {}), foreach=foreach), params0, grads)
    ref, _ = run(
        lambda ps: torch.optim.SGD(param_groups(ps, 0.1, {}), foreach=True), params0, grads
    )
    for p0, a, b in zip(params0, ours, ref, strict=True):
        assert rel_err(a, b, start=p0) <= TOL_VS_TORCH


@pytest.mark.parametrize("foreach", [True, False])
def test_sgd_momentum_matches_torch_dampened_sgd(foreach):
    """Ours == torch.optim.SGD(momentum=β, dampening=β) once torch's first step is fixed.

    torch sets buf = g on its first step (no dampening), we start from m_0 = 0 so m_1 =
    (1 - β) g. Pre-filling torch's ``momentum_buffer`` with zeros (= our m_0) makes torch take
    the regular branch buf = β·0 + (1 - β) g from step 1 on; then all 50 steps must agree.
    """
    beta = 0.9
    params0, grads = make_problem(seed=5)
    ours, _ = run(
        lambda ps: SGDMomentum(param_groups(ps, 0.1, {"momentum": beta}), foreach=foreach),
        params0,
        grads,
    )

    def torch_sgd(ps):
        opt = torch.optim.SGD(
            param_groups(ps, 0.1, {"momentum": beta, "dampening": beta}), foreach=True
        )
        for p in ps:
            opt.state[p]["momentum_buffer"] = torch.zeros_like(p)
        return opt

    ref, _ = run(torch_sgd, params0, grads)
    for p0, a, b in zip(params0, ours, ref, strict=True):
        assert rel_err(a, b, start=p0) <= TOL_VS_TORCH

    # Without that fix torch's first buffer is g_1 itself, 1 / (1 - β) = 10x ours (as documented).
    _, ours1 = run(lambda ps: SGDMomentum(ps, lr=0.1, momentum=beta), params0, grads[:1])
    _, torch1 = run(
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=beta, dampening=beta), params0, grads[:1]
    )
    for g, s_ours, s_torch in zip(
        grads[0], ours1.state.values(), torch1.state.values(), strict=True
    ):
        torch.testing.assert_close(s_torch["momentum_buffer"], g)
        torch.testing.assert_close(s_ours["momentum_buffer"], (1 - beta) * g)


# -----------------------------------------------------------------------------
# Optimizer API: state_dict, schedulers, closures, grad=None, validation


def tiny_mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 3))


def batches(n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(8, 10, generator=gen), torch.randint(0, 3, (8,), generator=gen))
        for _ in range(n)
    ]


def train_steps(model, opt, data):
    for x, y in data:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


OPTIMIZERS = {
    "sgd": lambda ps, **kw: SGD(ps, lr=0.1, weight_decay=1e-3, **kw),
    "sgd_mom": lambda ps, **kw: SGDMomentum(ps, lr=0.1, momentum=0.9, **kw),
    "adam": lambda ps, **kw: Adam(ps, lr=1e-2, weight_decay=1e-3, **kw),
}


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_state_dict_round_trip_is_bit_identical(name, foreach):
    make = OPTIMIZERS[name]
    data = batches(20)
    model = tiny_mlp()
    opt = make(model.parameters(), foreach=foreach)
    train_steps(model, opt, data[:10])

    # checkpoint mid-run: serialise like a real checkpoint (weights_only load works)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    model2 = copy.deepcopy(model)
    opt2 = make(model2.parameters(), foreach=foreach)
    opt2.load_state_dict(torch.load(buffer, weights_only=True))

    train_steps(model, opt, data[10:])
    train_steps(model2, opt2, data[10:])
    for a, b in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(a, b)
    for sa, sb in zip(opt.state.values(), opt2.state.values(), strict=True):
        assert sa.keys() == sb.keys()
        for key in sa:
            assert torch.equal(sa[key], sb[key]) if torch.is_tensor(sa[key]) else sa[key] == sb[key]
    if name == "adam":
        assert all(s["step"] == 20 for s in opt2.state.values())


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_step_lr_scheduler(name):
    model = tiny_mlp()
    opt = OPTIMIZERS[name](model.parameters())
    base_lr = opt.param_groups[0]["lr"]
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "lr_scheduler.step() before optimizer.step()"
        for x, y in batches(6):
            seen.append(opt.param_groups[0]["lr"])
            if name == "sgd":  # the update must use the scheduled lr: Δw = -lr (g + wd w)
                w = model[0].weight.detach().clone()
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            if name == "sgd":
                g = model[0].weight.grad + 1e-3 * w
                torch.testing.assert_close(model[0].weight.detach(), w - seen[-1] * g)
            sched.step()
    assert seen == pytest.approx([base_lr * 0.5 ** (i // 2) for i in range(6)])


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_step_with_closure(name, foreach):
    model = tiny_mlp()
    x, y = batches(1)[0]
    opt = OPTIMIZERS[name](model.parameters(), foreach=foreach)
    before = [p.detach().clone() for p in model.parameters()]
    calls = []

    def closure():
        calls.append(1)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()  # step() is no_grad: works only because closure runs under enable_grad
        return loss

    first = opt.step(closure)
    assert len(calls) == 1 and torch.is_tensor(first) and first.ndim == 0
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    for _ in range(30):
        last = opt.step(closure)
    assert last < first  # it actually trains
    assert opt.step() is None  # without closure: returns None


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_params_without_grad_are_skipped(name, foreach):
    a, b = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    opt = OPTIMIZERS[name]([a, b], foreach=foreach)
    a.grad = torch.ones(3)
    opt.step()
    assert torch.equal(b, torch.ones(3)) and len(opt.state[b]) == 0
    assert not torch.equal(a, torch.ones(3))
    opt.zero_grad()
    opt.step()  # all grads None: a no-op
    assert torch.equal(b, torch.ones(3))


@pytest.mark.parametrize(
    "cls, kwargs, message",
    [
        (SGD, {"lr": 0.0}, r"lr=0\.0: must be > 0"),
        (SGD, {"lr": -0.1}, r"lr=-0\.1: must be > 0"),
        (SGD, {"lr": math.nan}, r"lr=nan: must be > 0"),
        (SGD, {"lr": math.inf}, r"lr=inf: must be > 0 and finite$"),
        (SGD, {"weight_decay": -1e-4}, r"weight_decay=-0\.0001: must be >= 0"),
        (SGD, {"weight_decay": math.inf}, r"weight_decay=inf: must be >= 0 and finite$"),
        (SGD, {"weight_decay": math.nan}, r"weight_decay=nan: must be >= 0 and finite$"),
        (SGDMomentum, {"lr": -1.0}, r"lr=-1\.0: must be > 0"),
        (SGDMomentum, {"momentum": 1.0}, r"momentum=1\.0: must be in \[0, 1\)"),
        (SGDMomentum, {"momentum": -0.5}, r"momentum=-0\.5: must be in \[0, 1\)"),
        (SGDMomentum, {"weight_decay": -1.0}, r"weight_decay=-1\.0: must be >= 0"),
        (Adam, {"lr": 0}, r"lr=0: must be > 0"),
        (Adam, {"betas": (1.0, 0.999)}, r"betas\[0\]=1\.0: must be in \[0, 1\)"),
        (Adam, {"betas": (0.9, 1.5)}, r"betas\[1\]=1\.5: must be in \[0, 1\)"),
        (Adam, {"betas": (0.9,)}, r"betas=\(0\.9,\): must be a pair"),
        (Adam, {"eps": 0.0}, r"eps=0\.0: must be > 0"),
        (Adam, {"eps": -1e-8}, r"eps=-1e-08: must be > 0"),
        (Adam, {"eps": math.inf}, r"eps=inf: must be > 0 and finite$"),
        (Adam, {"lr": -math.inf}, r"lr=-inf: must be > 0 and finite$"),
        (Adam, {"weight_decay": -0.1}, r"weight_decay=-0\.1: must be >= 0"),
    ],
)
def test_invalid_arguments(cls, kwargs, message):
    with pytest.raises(ValueError, match=message) as err:
        cls([nn.Parameter(torch.zeros(2))], **kwargs)
    assert "\n" not in str(err.value)


def test_defaults_and_state_layout():
    p = nn.Parameter(torch.zeros(2))
    assert SGD([p]).defaults == {"lr": 0.1, "weight_decay": 0.0, "foreach": None}
    assert SGDMomentum([p]).defaults["momentum"] == 0.9
    adam = Adam([p])
    assert adam.defaults["betas"] == (0.9, 0.999) and adam.defaults["eps"] == 1e-8
    p.grad = torch.ones(2)
    adam.step()
    assert set(adam.state[p]) == {"step", "exp_avg", "exp_avg_sq"} and adam.state[p]["step"] == 1.0
    mom = SGDMomentum([p], momentum=0.9)
    mom.step()
    torch.testing.assert_close(mom.state[p]["momentum_buffer"], torch.full((2,), 0.1))


# -----------------------------------------------------------------------------
# Hydra configs


@pytest.mark.parametrize("path", sorted((CONF / "optim").glob("*.yaml")), ids=lambda p: p.stem)
def test_optim_configs_instantiate(path):
    cfg = OmegaConf.load(path)
    assert cfg._partial_ is True and "name" not in cfg
    factory = hydra.utils.instantiate(cfg)
    model = tiny_mlp()
    opt = factory(model.parameters())
    assert isinstance(opt, torch.optim.Optimizer)
    for key, value in cfg.items():
        if not key.startswith("_"):
            assert opt.defaults[key] == (tuple(value) if key == "betas" else value), key
    train_steps(model, opt, batches(2))  # and it can step


def test_optim_group_override_via_hydra_compose():
    overrides = ["+optim=sgd_mom", "optim.lr=0.05", "optim.momentum=0.8"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(overrides=overrides)
    opt = hydra.utils.instantiate(cfg.optim)(tiny_mlp().parameters())
    assert type(opt) is SGDMomentum
    assert opt.defaults["lr"] == 0.05 and opt.defaults["momentum"] == 0.8
    assert opt.param_groups[0]["lr"] == 0.05 and opt.param_groups[0]["momentum"] == 0.8


# -----------------------------------------------------------------------------
# pinned by mutation testing (docs/testing.md): each test below fails on a one-token change


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("name", list(CASES))
def test_weight_decay_of_one_is_applied(name, foreach):
    """wd = 1 exactly: a `weight_decay != 1` guard would skip it; the float64 reference does not."""
    cls, ref, hyper, lr = CASES[name]
    params0, grads = make_problem(seed=3)
    lr = lr / 10  # keep (1 - lr·wd) well inside (0, 1)
    ours, _ = run(lambda ps: cls(ps, lr=lr, weight_decay=1.0, foreach=foreach, **hyper), params0, grads)
    for i, (p0, p) in enumerate(zip(params0, ours, strict=True)):
        expected = ref(p0.double(), [g[i].double() for g in grads], lr=lr, wd=1.0, **hyper)
        without = ref(p0.double(), [g[i].double() for g in grads], lr=lr, wd=0.0, **hyper)
        assert rel_err(expected, without) > 1e-3  # the decay changes the result here
        assert rel_err(p, expected, start=p0) <= TOL, f"param {i}"


@pytest.mark.parametrize("name", list(CASES))
def test_foreach_none_takes_the_multi_tensor_path(name):
    """foreach=None means True (the fused path); the two paths round differently, so the bits
    tell which one ran."""
    cls, _, hyper, lr = CASES[name]
    params0, grads = make_problem(seed=4)
    results = {f: run(lambda ps, f=f: cls(ps, lr=lr, foreach=f, **hyper), params0, grads)[0]
               for f in (None, True, False)}
    assert all(torch.equal(a, b) for a, b in zip(results[None], results[True], strict=True))
    if name != "sgd":  # SGD's two paths are the same arithmetic (lr·g added), bit for bit
        assert not all(torch.equal(a, b) for a, b in zip(results[True], results[False], strict=True))


def test_zero_momentum_and_zero_betas_are_accepted():
    """The accepted range is [0, 1): 0 itself is valid (plain SGD / no first moment)."""
    p = nn.Parameter(torch.ones(2))
    SGDMomentum([p], momentum=0.0)
    Adam([p], betas=(0.0, 0.0))
    params0, grads = make_problem(seed=5)
    ours, _ = run(lambda ps: SGDMomentum(ps, lr=0.1, momentum=0.0), params0, grads)
    plain, _ = run(lambda ps: SGD(ps, lr=0.1), params0, grads)
    for a, b in zip(ours, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_defaults_are_the_tutorials():
    p = nn.Parameter(torch.zeros(2))
    assert SGDMomentum([p]).defaults == {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0, "foreach": None}
    assert Adam([p]).defaults == {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
                                  "foreach": None}


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_sparse_gradient_is_a_clear_error(name, foreach):
    emb = nn.Embedding(5, 3, sparse=True)
    emb(torch.tensor([1, 2])).sum().backward()
    assert emb.weight.grad.is_sparse
    with pytest.raises(RuntimeError, match=r"^sparse gradients are not supported by the hand-written optimizers$"):
        OPTIMIZERS[name](emb.parameters(), foreach=foreach).step()


@pytest.mark.parametrize("cls, kwargs, message", [
    (SGD, {"lr": "0.1"}, r"^Invalid lr='0\.1': must be a number$"),
    (SGD, {"lr": True}, r"^Invalid lr=True: must be a number$"),
    (SGD, {"weight_decay": "0"}, r"^Invalid weight_decay='0': must be a number$"),
    (SGDMomentum, {"momentum": None}, r"^Invalid momentum=None: must be a number$"),
    (Adam, {"betas": ("0.9", 0.999)}, r"^Invalid betas\[0\]='0\.9': must be a number$"),
    (Adam, {"eps": "1e-8"}, r"^Invalid eps='1e-8': must be a number$"),
])
def test_non_numbers_are_named_in_the_error(cls, kwargs, message):
    """A string or bool from a config (optim.lr="0.1", optim.lr=true) is refused by name, not
    compared or silently read as 1."""
    with pytest.raises(ValueError, match=message):
        cls([nn.Parameter(torch.zeros(2))], **kwargs)
