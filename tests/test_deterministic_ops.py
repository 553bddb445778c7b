"""The diagnostics would run on a GPU with `trainer.deterministic=true` (issue 11): checked on a CPU.

`torch.use_deterministic_algorithms(True)` makes some ops *raise* on CUDA (torch.histc, the
first diagnostics' histogram bucketing, did). A CPU run cannot raise, so every aten op the
diagnostics callbacks call is recorded (TorchDispatchMode) and compared with the ops behind each
entry of torch's own list, parsed from the docstring of `use_deterministic_algorithms`: an entry
this table does not map fails the test, so a new torch that adds one asks for a look.

Also checked here: between logging steps the callbacks call no tensor op at all, so they cannot
sync the host with the device there (a `.item()` or `.cpu()` is an aten op).
"""

from __future__ import annotations

import re
from functools import partial

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils._python_dispatch import TorchDispatchMode

from callbacks.diagnostics import ActivationStats, DistributionFigures, GradientStats, WeightStats
from callbacks.update_stats import UpdateStats
from callbacks.variance_probe import VarianceProbe
from src import optim as ours
from tests.test_diagnostics import TinyData, known_data, tiny_module

# Each entry of the docstring's "will throw a RuntimeError" list -> (aten ops it is, a test on the
# call's arguments or None for "always"). The CUDA-only conditions cannot be seen on a CPU, so an
# op counts as raising whenever it could on CUDA.
_NLL_REDUCED = lambda args, kw: (args[3] if len(args) > 3 else kw.get("reduction", 1)) != 0  # noqa: E731
RAISES_ON_CUDA = {
    "torch.nn.AvgPool3d": ({"avg_pool3d_backward"}, None),
    "torch.nn.AdaptiveAvgPool2d": ({"_adaptive_avg_pool2d_backward"}, None),
    "torch.nn.AdaptiveAvgPool3d": ({"_adaptive_avg_pool3d_backward"}, None),
    "torch.nn.AdaptiveMaxPool2d": ({"adaptive_max_pool2d_backward"}, None),
    "torch.nn.FractionalMaxPool2d": ({"fractional_max_pool2d_backward"}, None),
    "torch.nn.FractionalMaxPool3d": ({"fractional_max_pool3d_backward"}, None),
    "torch.nn.MaxUnpool1d": ({"max_unpool2d"}, None),  # 1d is implemented by the 2d kernel
    "torch.nn.MaxUnpool2d": ({"max_unpool2d"}, None),
    "torch.nn.MaxUnpool3d": ({"max_unpool3d"}, None),
    "torch.nn.functional.interpolate": ({"upsample_linear1d_backward", "upsample_bilinear2d_backward",
                                         "upsample_bicubic2d_backward", "upsample_trilinear3d_backward"}, None),
    "torch.nn.ReflectionPad1d": ({"reflection_pad1d_backward"}, None),
    "torch.nn.ReflectionPad2d": ({"reflection_pad2d_backward"}, None),
    "torch.nn.ReflectionPad3d": ({"reflection_pad3d_backward"}, None),
    # torch's CUDA code alerts in nll_loss2d's forward (reduced); the 1-D nll_loss of
    # cross_entropy on (N, C) logits reduces in one block, deterministically, and does not alert.
    "torch.nn.NLLLoss": ({"nll_loss2d_forward"}, _NLL_REDUCED),
    "torch.nn.CTCLoss": ({"_ctc_loss_backward"}, None),
    "torch.nn.EmbeddingBag": ({"_embedding_bag_backward", "_embedding_bag_dense_backward"}, None),
    "torch.Tensor.put_": ({"put_", "put"}, None),
    "torch.histc": ({"histc"}, None),
    # Older torch (2.11, say) lists these two as raising; newer ones made them deterministic.
    "torch.cumsum": ({"cumsum", "cumsum_"},
                     lambda args, kw: args[0].is_floating_point() or args[0].is_complex()),
    "torch.nn.MaxPool3d": ({"max_pool3d_with_indices_backward"}, None),
    "torch.bincount": ({"bincount"}, lambda args, kw: (args[1] if len(args) > 1 else kw.get("weights")) is not None),
    "torch.median": ({"median", "nanmedian"}, lambda args, kw: len(args) > 1 or "dim" in kw),  # with indices
    "torch.nn.functional.grid_sample": ({"grid_sampler_2d_backward", "grid_sampler_3d_backward"}, None),
    "torch.Tensor.scatter_reduce": ({"scatter_reduce", "scatter_reduce_"},
                                    lambda args, kw: (args[3] if len(args) > 3 else kw.get("reduce")) == "prod"),
    "torch.Tensor.resize_": ({"resize_"}, lambda args, kw: getattr(args[0], "is_quantized", False)),
}


def documented_raising_entries() -> list[str]:
    """The names in torch's "will throw a RuntimeError" list (this torch's docstring)."""
    doc = torch.use_deterministic_algorithms.__doc__
    section = doc.split("nondeterministic operations will throw")[1].split("In addition")[0]
    return re.findall(r"^\s*\* :\w+:`([\w.]+)`", section, flags=re.M)


class OpRecorder(TorchDispatchMode):
    """Records every aten op call (name, args, kwargs) while active."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[str, tuple, dict]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.calls.append((func.overloadpacket.__name__, args, kwargs))
        return func(*args, **kwargs)


def raising_calls(calls) -> list[str]:
    found = []
    for name, args, kwargs in calls:
        for entry, (ops, condition) in RAISES_ON_CUDA.items():
            if name in ops and (condition is None or condition(args, kwargs)):
                found.append(f"aten::{name} ({entry})")
    return found


def test_every_documented_entry_is_mapped():
    entries = documented_raising_entries()
    assert len(entries) >= 20, "parsing torch's docstring failed"
    unmapped = sorted(set(entries) - set(RAISES_ON_CUDA))
    assert not unmapped, f"torch lists new ops that raise under deterministic mode on CUDA; map them: {unmapped}"


def test_the_checker_catches_histc():
    """The first diagnostics bucketed with torch.histc: the check would have failed on it."""
    with OpRecorder() as rec:
        torch.histc(torch.randn(100), bins=10, min=-3, max=3)
        torch.bincount(torch.tensor([0, 1, 1]))  # no weights: fine on CUDA
        torch.median(torch.randn(5))  # no indices: fine
    assert raising_calls(rec.calls) == ["aten::histc (torch.histc)"]


class HookRecorder(pl.Callback):
    """Wraps every hook of the given callbacks with an OpRecorder; keeps (step, callback, hook, ops)."""

    HOOKS = ("on_train_start", "on_train_batch_start", "on_before_optimizer_step", "on_train_batch_end",
             "on_train_epoch_end", "on_train_end")

    def __init__(self, callbacks):
        self.log: list[tuple[int, str, str, list]] = []
        for cb in callbacks:
            for hook in self.HOOKS:
                original = getattr(cb, hook)
                setattr(cb, hook, self._wrap(cb, hook, original))

    def _wrap(self, cb, hook, original):
        def wrapped(trainer, *args, **kwargs):
            with OpRecorder() as rec:
                result = original(trainer, *args, **kwargs)
            self.log.append((trainer.global_step, type(cb).__name__, hook, rec.calls))
            return result

        return wrapped


@pytest.mark.parametrize("optimizer", [partial(ours.Adam, lr=0.01), partial(torch.optim.Adam, lr=0.01),
                                       partial(ours.SGDMomentum, lr=0.1)], ids=["adam", "torch_adam", "sgd_mom"])
def test_diagnostics_call_no_op_that_raises_on_cuda_under_deterministic_mode(tmp_path, optimizer):
    x, y = known_data()
    data = TinyData(torch.tensor(x, dtype=torch.float32), torch.tensor(y))
    module = tiny_module()
    module.optimizer = optimizer(module.net.parameters())
    every = 3
    callbacks = [ActivationStats(every_n_steps=every, batch_size=8), GradientStats(every_n_steps=every),
                 WeightStats(every_n_steps=every), UpdateStats(every_n_steps=every)]
    if optimizer.func is ours.Adam:  # the figures cost seconds; their ops do not depend on the optimizer
        callbacks += [DistributionFigures(every_n_epochs=3, batch_size=8), VarianceProbe(draws=2, batches=1, batch_size=8)]
    recorder = HookRecorder(callbacks)
    trainer = pl.Trainer(max_steps=7, logger=TensorBoardLogger(str(tmp_path), name="tb", version=""),
                         callbacks=callbacks, accelerator="cpu", deterministic=True, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    previous = torch.are_deterministic_algorithms_enabled()
    try:
        trainer.fit(module, datamodule=data)
        assert torch.are_deterministic_algorithms_enabled()  # Lightning switched it on
    finally:
        torch.use_deterministic_algorithms(previous)
    all_calls = [call for *_, calls in recorder.log for call in calls]
    assert len(all_calls) > 100  # the recorder saw the diagnostics work
    assert raising_calls(all_calls) == []
    # Between logging steps: no tensor op at all (so no host sync). A batch-end hook sees the
    # counter after the step (k+1); UpdateStats compares the weights after the step it copied.
    for step, cb, hook, calls in recorder.log:
        if calls and hook in ("on_train_batch_start", "on_before_optimizer_step", "on_train_batch_end"):
            after = hook == "on_train_batch_end" and cb == "UpdateStats"
            assert (step - after) % every == 0, f"{cb}.{hook} called tensor ops at step {step}"


def test_a_whole_training_run_calls_no_op_that_raises_on_cuda(tmp_path):
    """The module, the hand-written optimizers and Lightning's loop too (the rest of issue 11)."""
    x, y = known_data()
    data = TinyData(torch.tensor(x, dtype=torch.float32), torch.tensor(y))
    found = []
    for factory in (partial(ours.SGD, lr=0.1), partial(ours.SGDMomentum, lr=0.1), partial(ours.Adam, lr=0.01)):
        module = tiny_module()
        module.optimizer = factory(module.net.parameters())
        trainer = pl.Trainer(max_steps=3, logger=False, accelerator="cpu", enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
        with OpRecorder() as rec:
            trainer.fit(module, datamodule=data)
        assert len(rec.calls) > 50
        found += raising_calls(rec.calls)
    assert found == []
