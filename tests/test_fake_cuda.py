"""The GPU path keeps its tensors on the GPU: checked on a CPU with fake CUDA tensors (issue 11).

tests/test_gpu.py needs a GPU, and no GPU has run this code yet. torch's FakeTensorMode makes
tensors that say `device="cuda"` without one: each op works out shapes, dtypes and devices, not
values, and an op that mixes a CUDA tensor with a CPU one raises as it would on a GPU
("Expected all tensors to be on the same device"). So the hot path (the module's training step,
the optimizers, the tensor pipeline), the diagnostics callbacks at a logging step and the
landscape's grid run here on "CUDA" tensors: a tensor made on the host by mistake fails
`make test`, not the one GPU session.

What fake CUDA cannot do: autograd (its engine asks the CUDA driver for a context), so gradients
are set by hand, and the callbacks that differentiate (the variance probe, the gradient figures)
are left to tests/test_gpu.py. A fake tensor has no values, so a host read (`.tolist()`,
`.item()`, `bool()`) returns placeholder numbers here and is counted, and bincount, whose length
depends on the values, returns its `minlength` zeros.
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import TensorBoardLogger
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

from callbacks.diagnostics import (
    ActivationStats,
    GradientStats,
    WeightStats,
    linear_layers,
    tensor_stats,
)
from callbacks.divergence import DivergenceDetector
from callbacks.update_stats import UpdateStats
from src import landscape
from src.data import EpochBatchSampler, TensorLoader
from src.model import BaseNetwork
from src.module import ClassifierModule
from src.optim import SGD, Adam, SGDMomentum
from tests.conftest import RecordingWriter

HOST_READS = ("item", "numpy", "__bool__", "__float__", "__int__")


class FakeCuda:
    """While active: factory calls may say device="cuda"; host reads of fake tensors return
    placeholders (`reads` lists them with the device read from), `copies` lists the devices that
    fake tensors were copied to the host from (`.cpu()`); bincount returns `minlength` zeros."""

    def __init__(self, monkeypatch):
        self.reads: list[tuple[str, str]] = []
        self.copies: list[str] = []
        self._counter = itertools.cycle(range(1, 9))
        for name in HOST_READS:
            monkeypatch.setattr(torch.Tensor, name, self._placeholder(name, getattr(torch.Tensor, name)))
        real_cpu = torch.Tensor.cpu

        def cpu(t, *args, **kwargs):
            if isinstance(t, FakeTensor):
                self.copies.append(t.device.type)
            return real_cpu(t, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, "cpu", cpu)
        real_bincount = torch.bincount

        def bincount(t, weights=None, minlength=0):
            if isinstance(t, FakeTensor):
                return torch.zeros(minlength, dtype=torch.int64, device=t.device)
            return real_bincount(t, weights, minlength)

        monkeypatch.setattr(torch, "bincount", bincount)
        self.mode = FakeTensorMode(allow_non_fake_inputs=True)

    def _placeholder(self, name, real):
        def read(t, *args, **kwargs):
            if not isinstance(t, FakeTensor):
                return real(t, *args, **kwargs)
            self.reads.append((name, t.device.type))
            # 1, 2, ..., 8, 1, ... (a fake tensor's tolist() reads each element with item()): a row
            # of statistics mostly has min < max, so the histograms take their bucketing path.
            if name == "numpy":
                return np.arange(1, t.numel() + 1, dtype=np.float32).reshape(tuple(t.shape))
            if name in ("__bool__", "__int__"):
                return True if name == "__bool__" else 1
            return float(next(self._counter))

        return read

    def __enter__(self):
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self.mode.__exit__(*exc)


@pytest.fixture
def fake_cuda(monkeypatch):
    return FakeCuda(monkeypatch)


def off_the_gpu(module: torch.nn.Module) -> list[str]:
    """Names of the module's parameters and buffers that are not on the (fake) GPU."""
    return [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.device.type != "cuda"]


def test_the_checker_catches_a_host_tensor_meeting_a_gpu_one(fake_cuda):
    # torch 2.14: "Expected all tensors to be on the same device"; 2.11: "found two different devices"
    with fake_cuda, pytest.raises(RuntimeError, match="same device|different devices"):
        torch.ones(3, device="cuda") + torch.ones(3)


def test_a_training_step_stays_on_the_gpu_and_reads_nothing(fake_cuda):
    net = BaseNetwork(hidden_sizes=[32, 16])
    module = ClassifierModule(net, optimizer=None)
    with fake_cuda:
        module = module.to("cuda:0")  # Lightning asks the driver which device "cuda" is
        x, y = torch.randn(64, 1, 28, 28, device="cuda"), torch.randint(0, 10, (64,), device="cuda")
        for i in range(3):
            loss = module.training_step((x, y), i)
        assert loss.device.type == "cuda"
        assert fake_cuda.reads == []  # no progress-bar value on a GPU: Lightning would .item() it
        module.flush_train_acc()  # the epoch's one update of train_acc
        acc = module.train_acc.compute()
        assert acc.device.type == "cuda" and off_the_gpu(module) == []


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("cls", [SGD, SGDMomentum, Adam])
def test_optimizer_state_stays_on_the_gpu_and_a_step_reads_nothing(fake_cuda, cls, foreach):
    net = BaseNetwork(hidden_sizes=[32, 16])
    with fake_cuda:
        net = net.to("cuda")
        opt = cls(net.parameters(), lr=1e-2, weight_decay=1e-4, foreach=foreach)
        for _ in range(3):
            for p in net.parameters():
                p.grad = torch.randn_like(p)
            opt.step()
        state = [t for s in opt.state.values() for t in s.values() if torch.is_tensor(t)]
        assert state or cls is SGD
        assert {t.device.type for t in state} <= {"cuda"} and off_the_gpu(net) == []
        assert fake_cuda.reads == []


def test_the_tensor_pipeline_serves_an_epoch_on_the_gpu_without_host_reads(fake_cuda):
    with fake_cuda:
        images, labels = torch.randn(1000, 1, 28, 28, device="cuda"), torch.randint(0, 10, (1000,), device="cuda")
        for shuffle in (True, False):  # training; validation and test
            loader = TensorLoader(images, labels, EpochBatchSampler(1000, 256, shuffle=shuffle, drop_last=False, seed=3))
            batches = list(loader)
            assert [len(x) for x, _ in batches] == [256, 256, 256, 232]
            assert {t.device.type for b in batches for t in b} == {"cuda"}
        assert fake_cuda.reads == []


def trainer_at(step: int, writer: RecordingWriter, tmp_path):
    logger = TensorBoardLogger(tmp_path)
    logger._experiment = writer  # `experiment` returns it as it is
    return SimpleNamespace(global_step=step, is_global_zero=True, loggers=[logger], datamodule=None,
                           current_epoch=0, should_stop=False)


def test_the_diagnostics_callbacks_log_a_gpu_step(fake_cuda, tmp_path):
    net = BaseNetwork(hidden_sizes=[32, 16])
    module = ClassifierModule(net, optimizer=None)
    writer = RecordingWriter()
    callbacks = [ActivationStats(every_n_steps=200), GradientStats(every_n_steps=200),
                 WeightStats(every_n_steps=200), UpdateStats(every_n_steps=200), DivergenceDetector()]
    trainer = trainer_at(0, writer, tmp_path)
    with fake_cuda:
        module = module.to("cuda:0")  # Lightning asks the driver which device "cuda" is
        x, y = torch.randn(64, 1, 28, 28, device="cuda"), torch.randint(0, 10, (64,), device="cuda")
        trainer.datamodule = SimpleNamespace(diagnostic_batch=lambda n: (x[:n].cpu(), y[:n].cpu()))  # host, as the torchvision pipeline's
        opt = Adam(module.parameters(), lr=1e-3)
        for cb in callbacks:
            cb.on_train_start(trainer, module)
        assert "activations/var/layers.0" in writer.tags("scalars")  # step 0: the init
        fake_cuda.reads.clear()
        writer.scalars.clear()
        for step in (199, 200):  # an ordinary step, then a logging step
            trainer.global_step = step
            loss = F.cross_entropy(module(x), y)
            for p in module.parameters():
                p.grad = torch.randn_like(p)
            for cb in callbacks:
                cb.on_before_optimizer_step(trainer, module, opt)
            opt.step()
            for cb in callbacks:
                cb.on_train_batch_end(trainer, module, loss, (x, y), step)
            if step == 199:
                assert fake_cuda.reads == [] and writer.scalars == {}  # nothing due: no sync
        assert callbacks[-1]._losses == []  # read at step 200 (a multiple of the GPU check interval)
    layers = list(linear_layers(module.net))
    for kind in ("activations", "gradients", "weights", "updates/adam_log10_step"):
        assert {f"{kind}/{n}" for n in layers} <= writer.tags("histograms"), kind
    assert all(isinstance(v, float) for v in writer.scalars.values())
    assert {d for _, d in fake_cuda.reads} == {"cpu", "cuda"}  # one transfer, then host numbers


def test_statistics_of_gpu_tensors_come_back_in_one_transfer(fake_cuda):
    """tensor_stats: one device-to-host copy for all tensors (an empty one included: its row of
    NaN is made on the GPU too), none more when every value is finite."""
    with fake_cuda:
        values = {"a": torch.randn(8, 4, device="cuda"), "empty": torch.zeros(0, device="cuda"),
                  "b": torch.randn(3, device="cuda")}
        stats = tensor_stats(values)
    assert fake_cuda.copies == ["cuda"]
    assert set(stats) == {"a", "empty", "b"} and stats["empty"]["nonfinite"] == 0

    # A logging step with histograms: that transfer, then each layer's 64 counts, nothing else
    # (the histograms reuse the statistics' min, max and sums).
    fake_cuda.copies.clear()
    writer = RecordingWriter()
    with fake_cuda:
        WeightStats(every_n_steps=1).log_values(writer, {"a": values["a"], "b": values["b"]}, 3)
    assert fake_cuda.copies == ["cuda"] * 3
    assert [len(h["bucket_counts"]) for h in writer.histograms.values()] == [64, 64]


def test_an_update_stats_logging_step_makes_its_known_transfers(fake_cuda, tmp_path):
    """UpdateStats with Adam on the GPU: one copy of every layer's two norms, one of the log-steps'
    statistics, then per layer the median's buckets and the histogram's."""
    net = BaseNetwork(hidden_sizes=[32, 16])
    writer = RecordingWriter()
    trainer, module = trainer_at(0, writer, tmp_path), SimpleNamespace(net=None)
    cb = UpdateStats(every_n_steps=1)
    with fake_cuda:
        module.net = net.to("cuda")
        opt = Adam(module.net.parameters(), lr=1e-3)
        for p in module.net.parameters():
            p.grad = torch.randn_like(p)
        cb.on_before_optimizer_step(trainer, module, opt)
        opt.step()
        cb.on_train_batch_end(trainer, module, None, None, 0)
    layers = len(linear_layers(net))
    assert fake_cuda.copies == ["cuda"] * (2 + 2 * layers)
    assert len([t for t in writer.tags("histograms") if t.startswith("updates/adam_log10_step/")]) == layers


def test_the_landscape_grid_evaluates_on_the_gpu(fake_cuda):
    net = BaseNetwork(hidden_sizes=[32, 16])
    layout = landscape.Layout.of(net)
    final = torch.cat([p.detach().reshape(-1) for p in net.parameters()])  # on the host, as load_run
    d1, d2 = torch.randn(layout.numel), torch.randn(layout.numel)
    with fake_cuda:
        net = net.to("cuda")
        x, y = torch.randn(100, 1, 28, 28, device="cuda"), torch.randint(0, 10, (100,), device="cuda")
        loss, acc = landscape.evaluate_family(net, layout, final, [d1, d2], torch.zeros(9, 2), x, y,
                                              batch_points=4, batch_images=64)
        assert loss.shape == acc.shape == (9,)
        path = torch.stack([final, final + d1, final - d2])  # recorded on the host, as load_run reads it
        loss, acc = landscape.evaluate_points(net, layout, path, x, y, batch_points=2, batch_images=64)
        assert loss.shape == acc.shape == (3,)
        assert landscape.evaluate_loop(net, layout, path, x, y)[0].shape == (3,)
        fake_cuda.reads.clear()
        assert isinstance(landscape.plain_loss(net, x, y), float)
        assert fake_cuda.reads == [("item", "cuda")]  # computed on the GPU, read once per 2048 images
