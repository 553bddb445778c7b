"""What a training step costs on a GPU, counted on a CPU (issue 11, "remove what is ours").

On a GPU this MLP's arithmetic takes microseconds, so a step's time is its kernel launches and
host syncs. Every aten op that computes is one launch, and `_local_scalar_dense` (`.item()`,
`bool()`) is one sync, so counting ops tells, without a GPU and without timing noise, what the
app adds to the plain loop's step. The app runs its GPU policies here: the divergence check
reads the losses every 50 steps, and the module logs no per-step loss to the progress bar (on a
CPU it does every 10 steps: `loss.device.type == "cpu"` in src/module.py).
"""

from __future__ import annotations

from collections import Counter

import pytest
import pytorch_lightning as pl
import torch.nn.functional as F

from tests.conftest import compose
from tests.test_deterministic_ops import OpRecorder

# Ops that only make a new view of a tensor (or mark a profiler range): no kernel, no sync.
METADATA = {"t", "detach", "view", "_unsafe_view", "alias", "as_strided", "expand", "slice", "select",
            "squeeze", "unsqueeze", "split", "_record_function_enter_new", "_record_function_exit"}
FIRST, LAST = 20, 69  # the window of steps counted: after warm-up, no diagnostics due (every 200)
STEPS = LAST - FIRST + 1


def _launches(calls) -> Counter:
    return Counter(name for name, *_ in calls if name not in METADATA)


def _plain_loop_ops(datamodule) -> Counter:
    from src.model import BaseNetwork
    from src.optim import Adam

    net = BaseNetwork()
    opt = Adam(net.parameters(), lr=1e-3, foreach=True)
    for i, (x, y) in enumerate(datamodule.train_dataloader()):
        if i == FIRST:
            rec = OpRecorder().__enter__()
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i == LAST:
            rec.__exit__(None, None, None)
            return _launches(rec.calls)
    raise AssertionError("too few batches")


class StepWindow(pl.Callback):
    """Records every op of training steps FIRST..LAST, hooks included."""

    calls: list = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == FIRST:
            self.rec = OpRecorder().__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == LAST:
            self.rec.__exit__(None, None, None)
            StepWindow.calls = self.rec.calls


@pytest.mark.parametrize("manual_step", [True, False])
def test_a_gpu_step_launches_the_plain_loops_kernels_and_no_more(tmp_path, data_dir, monkeypatch, manual_step):
    """Per step the app (every diagnostic on) launches the plain loop's kernels and nothing else
    but one host sync per 50 steps (the divergence check). With module.manual_step=false (what
    a run with gradient clipping or accumulation gets) Lightning's automatic loop adds its own
    three ops: the loss divided by accumulate_grad_batches, that division's backward and the
    loss's clone for the closure. Before this test, train_acc's per-step update added 13."""
    from src.module import ClassifierModule
    from src.training import train

    log = ClassifierModule.log

    def gpu_policy_log(self, name, *args, **kwargs):  # what loss.device.type == "cuda" does
        if name != "train/loss":
            log(self, name, *args, **kwargs)

    monkeypatch.setattr(ClassifierModule, "log", gpu_policy_log)
    # Batches of 32: a step's ops are the same at any batch size, and 80 steps cost 8x less.
    cfg = compose(["trainer.max_epochs=1", "data.batch_size=32", "data.eval_batch_size=256",
                   f"data.train_subset={32 * (LAST + 11)}", "trainer.limit_val_batches=2",
                   "trainer.accelerator=cpu", "skip_test=true", "print_config=false",
                   f"module.manual_step={str(manual_step).lower()}",
                   "callbacks.divergence.check_every_n_steps=50",
                   "+callbacks._window._target_=tests.test_step_ops.StepWindow"], tmp_path)
    assert "activation_stats" in cfg.callbacks and "update_stats" in cfg.callbacks  # the default set
    train(cfg)
    import tests.test_step_ops as me  # the copy Hydra instantiated the callback from

    app = _launches(me.StepWindow.calls)

    from src.data import FashionMNISTDataModule

    dm = FashionMNISTDataModule(data_dir=str(data_dir), batch_size=cfg.data.batch_size,
                                train_subset=cfg.data.train_subset)
    dm.prepare_data()
    dm.setup()
    plain = _plain_loop_ops(dm)

    added, missing = app - plain, plain - app
    assert not missing, f"the app's step lacks ops of the plain loop's: {dict(missing)}"
    syncs = added.pop("_local_scalar_dense", 0)
    assert syncs <= 1, f"{syncs} host syncs in {STEPS} steps (one divergence read is expected)"
    lightning = Counter() if manual_step else Counter({"div": 2 * STEPS, "clone": STEPS})
    divergence_read = added - lightning  # the one check in the window: a handful of ops, once
    assert added - divergence_read == lightning, f"per {STEPS} steps the app adds {dict(added)}"
    assert sum(divergence_read.values()) <= 8, f"per {STEPS} steps the app adds {dict(added)}"


def test_an_epochs_loss_curve_fits_the_tensorboard_writers_queue(tmp_path):
    """drain_losses writes an epoch's per-step losses in one burst; with SummaryWriter's default
    queue of 10 the burst waits on the writer thread for each point (4x longer on the training
    thread: benchmarks/loss_curve_write.py). The default config's queue holds a whole epoch."""
    import hydra

    cfg = compose([], tmp_path)
    logger = hydra.utils.instantiate(cfg.logger.tensorboard)
    steps_per_epoch = 50_000 // cfg.data.batch_size
    assert logger.experiment.max_queue >= steps_per_epoch
    logger.experiment.close()


def test_our_foreach_steps_launch_no_more_kernels_than_torch_optim():
    """The speed goal on CUDA (ours <= 1.1x torch.optim foreach) is launch-bound there: our
    foreach step makes one foreach kernel per update line, no more than torch's own, and reads
    no tensor on the host (torch's Adam reads its CPU `step` counters; those are no GPU sync)."""
    import torch

    from src.optim import SGD, Adam, SGDMomentum

    shapes = [(512, 784), (512,), (256, 512), (256,), (10, 256), (10,)]

    def launches(make) -> Counter:
        params = [torch.randn(s, requires_grad=True) for s in shapes]
        for p in params:
            p.grad = torch.randn_like(p)
        opt = make(params)
        opt.step()
        opt.step()  # the state exists: a steady step is counted
        with OpRecorder() as rec:
            opt.step()
        return Counter(n for n, *_ in rec.calls if n not in METADATA | {"lift_fresh"})

    expected = {"sgd": 1, "sgd_mom": 2, "adam": 6}
    for name, ours, theirs in [
        ("sgd", lambda ps: SGD(ps, lr=0.1, foreach=True), lambda ps: torch.optim.SGD(ps, lr=0.1, foreach=True)),
        ("sgd_mom", lambda ps: SGDMomentum(ps, lr=0.1, momentum=0.9, foreach=True),
         lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, foreach=True)),
        ("adam", lambda ps: Adam(ps, lr=1e-3, foreach=True), lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=True)),
    ]:
        mine, torchs = launches(ours), launches(theirs)
        torchs.pop("_local_scalar_dense", None)  # its CPU step counters: no GPU sync
        assert all(op.startswith("_foreach_") for op in mine), (name, dict(mine))  # no host read either
        assert sum(mine.values()) == expected[name] <= sum(torchs.values()), (name, dict(mine), dict(torchs))


def test_the_hook_name_lightning_sets_around_each_hook_skips_nn_modules_setattr(monkeypatch):
    """Lightning sets `_current_fx_name` 44 times a step (benchmarks/step_profile.py);
    src/module.py sets it plainly (75-119 µs a step less at tiny sizes,
    benchmarks/callback_dispatch.py). Every other attribute keeps nn.Module's rules."""
    import pytest
    import torch

    from src.model import BaseNetwork
    from src.module import ClassifierModule

    assert "_current_fx_name" in vars(pl.LightningModule())  # the name this Lightning uses
    seen = []
    module_setattr = torch.nn.Module.__setattr__

    def counting(self, name, value):
        seen.append(name)
        module_setattr(self, name, value)

    monkeypatch.setattr(torch.nn.Module, "__setattr__", counting)
    module, extra = ClassifierModule(BaseNetwork(hidden_sizes=[8])), torch.nn.Linear(2, 2)
    seen.clear()
    module._current_fx_name = "training_step"
    assert module._current_fx_name == "training_step" and seen == []
    module.extra = extra
    assert seen == ["extra"] and "extra" in module._modules
    with pytest.raises(TypeError, match="child module"):
        module.net = "not a module"
