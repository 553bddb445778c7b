"""UpdateStats: ‖Δw‖/‖w‖ of the actual step for every optimizer (ours and torch's), Adam's effective
per-element steps from its state, on logging steps only."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from callbacks.update_stats import UpdateStats, adam_effective_steps
from src import optim as ours
from src.model import BaseNetwork
from tests.conftest import RecordingWriter

OPTIMIZERS = {
    "sgd": lambda p: ours.SGD(p, lr=0.1),
    "sgd_mom": lambda p: ours.SGDMomentum(p, lr=0.1, momentum=0.9),
    "adam": lambda p: ours.Adam(p, lr=1e-3),
    "adam_wd": lambda p: ours.Adam(p, lr=1e-3, weight_decay=0.01),
    "torch_sgd": lambda p: torch.optim.SGD(p, lr=0.1),
    "torch_sgd_mom": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.9),
    "torch_adam": lambda p: torch.optim.Adam(p, lr=1e-3, foreach=True),
    "torch_adamw": lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.01),
}


class FakeModule(SimpleNamespace):
    """What the callback reads of a LightningModule: `.net`."""


def fake_trainer(tmp_path, step: int):
    return SimpleNamespace(global_step=step, is_global_zero=True,
                           loggers=[TensorBoardLogger(str(tmp_path), name="tb", version="")])


def backward(net, seed):
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(32, 20, generator=gen), torch.randint(0, 3, (32,), generator=gen)
    net.zero_grad()
    F.cross_entropy(net(x), y).backward()


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_update_ratio_is_the_relative_change_of_the_weights(tmp_path, name):
    torch.manual_seed(0)
    net = BaseNetwork(act_fn="relu", input_size=20, num_classes=3, hidden_sizes=[16, 8])
    opt = OPTIMIZERS[name](net.parameters())
    cb = UpdateStats(every_n_steps=2)
    trainer = fake_trainer(tmp_path, 0)
    module = FakeModule(net=net)
    for step in range(5):  # steps 0, 2, 4 log; the weights move on every step
        trainer.global_step = step
        backward(net, seed=step)
        before = {n: m.weight.detach().clone() for n, m in net.named_modules() if isinstance(m, torch.nn.Linear)}
        cb.on_before_optimizer_step(trainer, module, opt)
        opt.step()
        trainer.global_step = step + 1
        cb.on_train_batch_end(trainer, module, None, None, step)
        if step % 2:
            assert step not in cb.history
            continue
        for layer, w0 in before.items():
            w1 = dict(net.named_modules())[layer].weight.detach()
            expected = float(torch.linalg.vector_norm(w1 - w0) / torch.linalg.vector_norm(w0))
            assert expected > 0
            assert cb.history[step][layer] == pytest.approx(expected, rel=1e-6), (name, step, layer)
    assert sorted(cb.history) == [0, 2, 4]
    trainer.loggers[0].experiment.flush()
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("updates/ratio/layers.0")] == [0, 2, 4]
    adam_like = "adam" in name
    assert ("updates/adam_step_median/layers.0" in acc.Tags()["scalars"]) == adam_like
    assert ("updates/adam_log10_step/layers.0" in acc.Tags()["histograms"]) == adam_like


@pytest.mark.parametrize("make", [lambda p: ours.Adam(p, lr=0.01, betas=(0.8, 0.99), eps=1e-3),
                                  lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.99), eps=1e-3)],
                         ids=["ours", "torch"])
def test_adam_effective_step_equals_the_formula_on_a_fixed_state(make):
    w = torch.nn.Parameter(torch.zeros(2, 3))
    opt = make([w])
    w.grad = torch.ones_like(w)
    opt.step()  # creates the state under the optimizer's own names and types
    m = torch.tensor([[0.1, -0.2, 0.3], [0.0, 1e-4, -5.0]])
    v = torch.tensor([[0.01, 0.04, 1e-8], [0.0, 1.0, 25.0]])
    state = opt.state[w]
    state["exp_avg"].copy_(m)
    state["exp_avg_sq"].copy_(v)
    state["step"] = torch.tensor(7.0) if isinstance(state["step"], torch.Tensor) else 7.0
    (steps,) = adam_effective_steps(opt, [w])
    bc1, bc2 = 1 - 0.8**7, 1 - 0.99**7
    expected = np.abs(0.01 * (m.numpy() / bc1) / (np.sqrt(v.numpy() / bc2) + 1e-3))
    np.testing.assert_allclose(steps.numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("make", [lambda p: ours.Adam(p, lr=0.01), lambda p: torch.optim.Adam(p, lr=0.01)],
                         ids=["ours", "torch"])
def test_adam_effective_step_is_the_step_just_taken(make):
    torch.manual_seed(1)
    # float64: w_after - w_before of a 1e-3 step on weights ~1 loses ~1e-4 relative in float32
    w = torch.nn.Parameter(torch.randn(4, 5, dtype=torch.float64))
    opt = make([w])
    for _ in range(3):
        w.grad = torch.randn(4, 5, dtype=torch.float64)
        before = w.detach().clone()
        opt.step()
    (steps,) = adam_effective_steps(opt, [w])
    np.testing.assert_allclose(steps.numpy(), (w.detach() - before).abs().numpy(), rtol=1e-5, atol=1e-9)


def test_no_adam_state_no_adam_steps():
    w = torch.nn.Parameter(torch.ones(3))
    for opt in (ours.SGDMomentum([w], lr=0.1), torch.optim.SGD([w], lr=0.1, momentum=0.9)):
        w.grad = torch.ones(3)
        opt.step()
        assert adam_effective_steps(opt, [w]) is None


def test_band_arguments_are_checked():
    with pytest.raises(ValueError, match="low must be < high"):
        UpdateStats(ratio_band=(0.1, 1e-6))
    with pytest.raises(ValueError, match="patience"):
        UpdateStats(patience=0)
    assert math.isclose(UpdateStats().ratio_band[1], 0.1)


def test_adam_step_median_read_off_the_buckets_is_within_a_tenth_of_a_decade():
    gen = torch.Generator().manual_seed(0)
    steps = [10 ** (torch.randn(300, 200, generator=gen, dtype=torch.float64) - 3.5)]  # log-normal, median 10^-3.5
    writer = RecordingWriter()
    cb = UpdateStats()
    cb._step = 0
    cb._log_adam_steps(writer, ["layers.0"], steps)
    logged = writer.scalars[("updates/adam_step_median/layers.0", 0)]
    assert abs(math.log10(logged) - math.log10(float(steps[0].median()))) < 0.05


def test_the_adam_step_median_and_histogram_of_skewed_and_constant_steps():
    """The median read off the buckets (not the middle of the range), at the logging step; a layer
    whose steps are all equal (Adam's first step is lr wherever |g| >> eps) has that one value."""
    writer = RecordingWriter()
    cb = UpdateStats()
    cb._step = 40
    skewed = torch.cat([torch.full((900,), 1e-4), torch.full((100,), 1e-1)])  # median 1e-4, mid-range 10^-2.5
    cb._log_adam_steps(writer, ["a", "b"], [skewed, torch.full((5, 4), 1e-3)])
    assert math.log10(writer.scalars[("updates/adam_step_median/a", 40)]) == pytest.approx(-4, abs=0.05)
    assert writer.scalars[("updates/adam_step_median/b", 40)] == pytest.approx(1e-3, rel=1e-6)
    h = writer.histograms[("updates/adam_log10_step/a", 40)]
    assert (h["num"], h["min"], h["max"]) == (1000, pytest.approx(-4), pytest.approx(-1))
    assert h["bucket_counts"][0] == 900 and h["bucket_counts"][-1] == 100 and len(h["bucket_counts"]) == 64
    assert h["sum_squares"] == pytest.approx(900 * 16 + 100 * 1, rel=1e-6)
    assert writer.histograms[("updates/adam_log10_step/b", 40)]["bucket_counts"] == [20.0]


def test_nan_adam_steps_are_left_out_of_the_median_and_histogram():
    """float16 weights with eps=1e-8 (eps rounds to 0) give NaN steps; they crashed bincount."""
    writer = RecordingWriter()
    cb = UpdateStats()
    cb._step = 7
    some = torch.tensor([1e-4, float("nan"), 1e-4, 1e-2, float("nan")], dtype=torch.float16)
    cb._log_adam_steps(writer, ["all", "some"], [torch.full((3,), float("nan")), some])  # the next layer goes on
    assert math.log10(writer.scalars[("updates/adam_step_median/some", 7)]) == pytest.approx(-4, abs=0.05)
    h = writer.histograms[("updates/adam_log10_step/some", 7)]
    assert h["num"] == 3 and sum(h["bucket_counts"]) == 3
    assert h["min"] == pytest.approx(-4, abs=1e-3) and h["max"] == pytest.approx(-2, abs=1e-3)
    # a layer of NaN only: nothing charted for it
    assert not [k for k in [*writer.scalars, *writer.histograms] if k[0].endswith("/all")]


def test_median_of_buckets_by_hand():
    from callbacks.update_stats import _median_of_buckets

    assert _median_of_buckets([4], 0.0, 1.0) == 0.5  # half of 4 values: the middle of the one bucket
    assert _median_of_buckets([1, 3], 0.0, 2.0) == pytest.approx(1 + 1 / 3)  # 1 of the 3 in bucket 1
    assert _median_of_buckets([2, 0, 2], 0.0, 3.0) == 1.0  # an even split: the lower half's top edge
    assert _median_of_buckets([0, 0], 0.0, 1.0) == 1.0  # nothing counted: the top


def test_zero_weights_give_an_infinite_or_zero_ratio_kept_out_of_the_charts(tmp_path):
    """A layer whose weights are all 0 (init=const with 0): an update gives ‖Δw‖/‖w‖ = inf (in the
    history, for the band watch: "exploding"), no update gives 0; neither inf nor NaN is charted."""
    net = BaseNetwork(act_fn="relu", input_size=20, num_classes=3, hidden_sizes=[8])
    with torch.no_grad():
        net.layers[0].weight.zero_()
        net.layers[2].weight.zero_()
    trainer, module = fake_trainer(tmp_path, 0), FakeModule(net=net)
    writer = RecordingWriter()
    trainer.loggers[0]._experiment = writer
    cb = UpdateStats(every_n_steps=1, ratio_band=(1e-6, 0.1), patience=1)
    opt = ours.SGD(net.parameters(), lr=0.1)
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    net.layers[0].weight.grad.fill_(0.01)  # layers.0 moves (‖Δw‖ = 0.013), layers.2 does not
    cb.on_before_optimizer_step(trainer, module, opt)
    opt.step()
    with pytest.warns(UserWarning, match=r"exploding update ratio ‖Δw‖/‖w‖: layers.0 = inf \(above 1e-01\)"):
        cb.on_train_batch_end(trainer, module, None, None, 0)
    assert cb.history[0] == {"layers.0": math.inf, "layers.2": 0.0}
    assert ("updates/ratio/layers.0", 0) not in writer.scalars
    assert writer.scalars[("updates/ratio/layers.2", 0)] == 0.0


def test_every_n_steps_0_logs_the_first_step_only_and_a_budget_is_kept(tmp_path):
    net = BaseNetwork(act_fn="relu", input_size=20, num_classes=3, hidden_sizes=[8])
    trainer, module = fake_trainer(tmp_path, 0), FakeModule(net=net)
    opt = ours.Adam(net.parameters(), lr=1e-3)
    once, each = UpdateStats(every_n_steps=0), UpdateStats(every_n_steps=1, budget=0.5)
    assert (each.budget, UpdateStats().every_n_steps, UpdateStats().patience) == (0.5, 200, 3)
    for cb in (once, each):
        cb.on_train_start(trainer, module)
    for step in range(3):
        trainer.global_step = step
        backward(net, seed=step)
        for cb in (once, each):
            cb.on_before_optimizer_step(trainer, module, opt)
        opt.step()
        for cb in (once, each):
            cb.on_train_batch_end(trainer, module, None, None, step)
    assert sorted(once.history) == [0]
    # With a budget the interval may double after a step (this loop is mostly our own work); its
    # bookkeeping is fed the logged steps.
    assert sorted(each.history)[:2] == [0, 1] and each.every_n_steps & (each.every_n_steps - 1) == 0


@pytest.mark.parametrize("wrapped", [False, True])
def test_adam_steps_through_lightnings_wrapper_and_amsgrad(wrapped):
    """Lightning hands the callbacks a LightningOptimizer; AMSGrad divides by the running max of
    v, which here is not v (the gradients shrink)."""
    from pytorch_lightning.core.optimizer import LightningOptimizer

    w = torch.nn.Parameter(torch.randn(4, 5, dtype=torch.float64))
    opt = torch.optim.Adam([w], lr=0.01, amsgrad=True)
    for scale in (1.0, 0.1, 0.01):
        w.grad = torch.randn(4, 5, dtype=torch.float64) * scale
        before = w.detach().clone()
        opt.step()
    state = opt.state[w]
    assert not torch.equal(state["max_exp_avg_sq"], state["exp_avg_sq"])
    (steps,) = adam_effective_steps(LightningOptimizer(opt) if wrapped else opt, [w])
    np.testing.assert_allclose(steps.numpy(), (w.detach() - before).abs().numpy(), rtol=1e-5, atol=1e-12)


def test_adam_steps_need_the_whole_adam_state():
    """No effective step unless the parameter has m, v and t and its group has betas; an
    AMSGrad max in a group that does not use AMSGrad is ignored."""
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([w], lr=0.1)
    w.grad = torch.ones(3)
    opt.step()
    (plain,) = adam_effective_steps(opt, [w])
    opt.state[w]["max_exp_avg_sq"] = torch.full((3,), 1e6)  # not read: amsgrad is off
    assert torch.equal(adam_effective_steps(opt, [w])[0], plain)
    for key in ("exp_avg", "exp_avg_sq", "step"):
        saved = opt.state[w].pop(key)
        assert adam_effective_steps(opt, [w]) is None, key
        opt.state[w][key] = saved
    betas = opt.param_groups[0].pop("betas")
    assert adam_effective_steps(opt, [w]) is None
    opt.param_groups[0]["betas"] = betas
    assert adam_effective_steps(opt, [torch.nn.Parameter(torch.ones(3))]) is None  # not this optimizer's
