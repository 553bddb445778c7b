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
    class Writer:
        def __init__(self):
            self.scalars = {}

        def add_scalar(self, tag, value, step):
            self.scalars[tag] = value

        def add_histogram_raw(self, *args, **kwargs):
            pass

    gen = torch.Generator().manual_seed(0)
    steps = [10 ** (torch.randn(300, 200, generator=gen, dtype=torch.float64) - 3.5)]  # log-normal, median 10^-3.5
    writer = Writer()
    cb = UpdateStats()
    cb._step = 0
    cb._log_adam_steps(writer, ["layers.0"], steps)
    logged = writer.scalars["updates/adam_step_median/layers.0"]
    assert abs(math.log10(logged) - math.log10(float(steps[0].median()))) < 0.05
