"""Mixed precision with the hand-written optimizers: `trainer.precision=bf16-mixed` (autocast,
no scaler) and `16-mixed` (autocast + GradScaler, which calls `step()` without a closure after
unscaling the gradients itself). Weights and optimizer state stay float32 in both.

On a CPU Lightning turns `16-mixed` into `bf16-mixed` (with a warning), so the GradScaler path
is tested with Lightning's MixedPrecision plugin built for the CPU by hand; the GPU check
(tests/test_gpu.py) runs both through train.py's config.
"""

from __future__ import annotations

import functools
import json

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.precision import MixedPrecision

from src.data import FashionMNISTDataModule
from src.model import BaseNetwork
from src.module import ClassifierModule
from src.optim import SGD, Adam, SGDMomentum
from src.training import train
from tests.conftest import FAST, compose

OPTIMIZERS = {
    "sgd": functools.partial(SGD, lr=0.1),
    "sgd_mom": functools.partial(SGDMomentum, lr=0.1, momentum=0.9),
    "adam": functools.partial(Adam, lr=1e-3),
}


def _float32_everywhere(ckpt: dict) -> None:
    assert all(t.dtype == torch.float32 for t in ckpt["state_dict"].values() if t.is_floating_point())
    for opt in ckpt["optimizer_states"]:
        for state in opt["state"].values():
            for name, t in state.items():
                if torch.is_tensor(t) and t.is_floating_point() and t.dim() > 0:
                    assert t.dtype == torch.float32, name


@pytest.mark.parametrize("optim", ["sgd_mom", "adam"])
def test_bf16_mixed_trains_with_float32_weights_and_state(tmp_path, data_dir, optim):
    cfg = compose([*FAST, f"optim={optim}", "trainer.precision=bf16-mixed"], tmp_path)
    train(cfg)
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["status"] == "ok" and r["global_step"] == 10
    losses = r["train_losses"]
    assert all(v is not None for v in losses) and losses[-1] < losses[0]
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    _float32_everywhere(ckpt)
    assert r["config"]["trainer"]["precision"] == "bf16-mixed"


def test_bf16_mixed_changes_the_numbers(tmp_path, data_dir):
    """The autocast really happens: bf16 matmuls give other losses than float32 ones."""
    runs = {}
    for precision in ("32-true", "bf16-mixed"):
        out = tmp_path / precision
        train(compose([*FAST, f"trainer.precision={precision}"], out))
        runs[precision] = json.loads((out / "results.json").read_text())["train_losses"]
    assert runs["32-true"][0] != runs["bf16-mixed"][0]
    assert runs["32-true"][0] == pytest.approx(runs["bf16-mixed"][0], rel=0.05)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_grad_scaler_step_equals_the_plain_step(name):
    """GradScaler.step(opt) unscales the gradients (by a power of two: exact) and calls
    `opt.step()` with no closure: the update must be the one the plain step makes."""
    torch.manual_seed(0)
    params = [torch.randn(5, 3), torch.randn(3)]
    grads = [torch.randn_like(p) for p in params]
    plain = [p.clone().requires_grad_() for p in params]
    scaled = [p.clone().requires_grad_() for p in params]
    opt_plain, opt_scaled = OPTIMIZERS[name](plain), OPTIMIZERS[name](scaled)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    for _ in range(3):
        scaler.scale(torch.zeros(()))  # what scaler.scale(loss).backward() does first
        for p, g in zip(plain, grads, strict=True):
            p.grad = g.clone()
        for p, g in zip(scaled, grads, strict=True):
            p.grad = g * scaler.get_scale()
        opt_plain.step()
        scaler.step(opt_scaled)
        scaler.update()
    for a, b in zip(plain, scaled, strict=True):
        assert torch.equal(a, b)
    # A non-finite gradient: the scaler skips the step, weights and state are untouched.
    before = [p.detach().clone() for p in scaled]
    state = {k: v.clone() if torch.is_tensor(v) else v
             for k, v in opt_scaled.state[scaled[0]].items()} if opt_scaled.state else {}
    scaled[0].grad = torch.full_like(scaled[0], float("inf"))
    scaled[1].grad = torch.ones_like(scaled[1])
    scaler.step(opt_scaled)
    assert all(torch.equal(a, b) for a, b in zip(before, scaled, strict=True))
    for k, v in state.items():
        assert torch.equal(torch.as_tensor(v), torch.as_tensor(opt_scaled.state[scaled[0]][k]))


@pytest.mark.parametrize("name", ["sgd_mom", "adam"])
def test_16_mixed_with_grad_scaler_trains(data_dir, name, tmp_path):
    """Lightning's 16-mixed path (autocast to float16 + GradScaler) on the CPU, built by hand."""
    plugin = MixedPrecision("16-mixed", "cpu")
    assert isinstance(plugin.scaler, torch.amp.GradScaler)
    dm = FashionMNISTDataModule(data_dir=str(data_dir), train_subset=2560)
    network = BaseNetwork()
    model = ClassifierModule(network=network, optimizer=OPTIMIZERS[name](network.parameters()))
    w0 = model.net.layers[0].weight.detach().clone()
    trainer = pl.Trainer(accelerator="cpu", devices=1, plugins=[plugin], max_epochs=1, limit_val_batches=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 10
    assert plugin.scaler.get_scale() > 0 and plugin.scaler._scale is not None  # the scaler was used
    assert not torch.equal(w0, model.net.layers[0].weight)  # the steps were applied
    assert all(p.dtype == torch.float32 for p in model.parameters())
    opt = trainer.optimizers[0]
    for state in opt.state.values():
        assert all(t.dtype == torch.float32 for t in state.values() if torch.is_tensor(t) and t.dim() > 0)
    losses = model.history["train_losses"]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


def test_64_true_trains_with_every_diagnostic(tmp_path, data_dir):
    """`trainer.precision=64`: Lightning converts each batch to float64; the diagnostics' own
    batch is converted the same way (it was fed as float32: a dtype RuntimeError at step 0)."""
    cfg = compose([*FAST, "callbacks=default", "trainer.precision=64-true"], tmp_path)
    train(cfg)
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["status"] == "ok" and r["global_step"] == 10
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert {t.dtype for t in ckpt["state_dict"].values() if t.is_floating_point()} == {torch.float64}
    assert (tmp_path / "probe.json").is_file()  # the variance probe ran on the float64 batch


def test_16_mixed_makes_the_same_steps_with_the_modules_step_and_lightnings_loop(data_dir, tmp_path):
    """Under manual optimization the GradScaler path differs (the loss is scaled in
    manual_backward, step() gets no backward to run): the scaled, unscaled and skipped steps are
    the same as in Lightning's automatic loop, bit for bit."""
    runs = {}
    for manual in (True, False):
        plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0**20))
        dm = FashionMNISTDataModule(data_dir=str(data_dir), train_subset=2560)
        torch.manual_seed(0)
        network = BaseNetwork()
        w0 = [p.detach().clone() for p in network.parameters()]
        model = ClassifierModule(network=network, optimizer=OPTIMIZERS["adam"](network.parameters()),
                                 manual_step=manual)
        trainer = pl.Trainer(accelerator="cpu", devices=1, plugins=[plugin], max_epochs=1, limit_val_batches=1,
                             logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, default_root_dir=str(tmp_path / str(manual)))
        trainer.fit(model, datamodule=dm)
        assert model.automatic_optimization is (not manual)
        runs[manual] = (model.history, [p.detach().clone() for p in model.parameters()], plugin.scaler.get_scale())
        assert not torch.equal(w0[0], runs[manual][1][0])  # steps were applied
    assert runs[True][2] == runs[False][2] == 2.0**17  # 2**20 overflowed float16: 3 steps skipped, 7 made
    assert runs[True][0] == runs[False][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[True][1], runs[False][1], strict=True))
