"""src/step_graph.py, module.cuda_graph: a training step replayed as a CUDA graph.

A CPU cannot capture a CUDA graph. These tests replay steps with `eager_capture`, which runs
the recorded function again and copies its results into the first run's tensors (NaN until
the first replay): the fixed outputs a real graph has. What that proves: the module keeps what
it must copy, sets the gradients, skips what it must (other shapes, hooks) and reports what it
did. That the real capture computes what the eager step does is tests/test_gpu.py's, on a GPU.
"""

from __future__ import annotations

import contextlib
import json
import re

import pytest
import torch
import torch.nn.functional as F

from src import step_graph
from src.model import BaseNetwork
from src.optim import Adam
from src.step_graph import StepGraph, eager_capture, hooked
from src.training import train
from tests.conftest import FAST, compose, warnings_of, what_runs_write


def _net():
    torch.manual_seed(0)
    return BaseNetwork(input_size=12, num_classes=3, hidden_sizes=[8, 6])


def json_of(run):
    return json.loads((run / "results.json").read_text())


def _batches(n, size=5):
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(size, 12, generator=gen), torch.randint(0, 3, (size,), generator=gen)) for _ in range(n)]


def test_replayed_steps_train_as_the_eager_steps_bit_for_bit():
    eager_net, graph_net = _net(), _net()
    eager_opt, graph_opt = Adam(eager_net.parameters(), lr=0.01), Adam(graph_net.parameters(), lr=0.01)
    batches = _batches(12)
    graph = StepGraph(graph_net, *batches[0], capture=eager_capture)
    assert torch.isnan(graph.loss)  # nothing computed until the first replay, as on a GPU
    for x, y in batches:
        eager_opt.zero_grad()
        logits = eager_net(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        eager_opt.step()
        graph_logits, graph_loss = graph.step(x, y)
        assert torch.equal(graph_logits, logits.detach()) and torch.equal(graph_loss, loss.detach())
        graph_opt.step()
    assert graph.replays == 12
    for a, b in zip(eager_net.parameters(), graph_net.parameters(), strict=True):
        assert torch.equal(a, b)
        assert torch.equal(a.grad, b.grad)
    # the outputs are the same tensors every replay: a caller that keeps them must copy
    logits_before = graph.logits
    graph.step(*batches[1])
    assert graph.logits is logits_before


class RecordedCuda:
    """Stands in for the torch.cuda calls cuda_capture makes and writes down, in order, what
    each did: which device and stream were current, which streams waited for which, and under
    what each call of the step ran."""

    def __init__(self, monkeypatch):
        self.log: list[tuple] = []
        self.current = ["default"]  # the stream stack, as torch.cuda.stream() changes it
        self.captured = self.capturing = None
        rec = self

        class Stream:
            def __init__(self, name="side"):
                self.name = name

            def wait_stream(self, other):
                rec.log.append(("wait", self.name, other.name))

        class Graph:
            def replay(self):
                rec.log.append(("replay",))

        @contextlib.contextmanager
        def scope(*entered):
            rec.log.append(("enter", *entered))
            yield
            rec.log.append(("exit", entered[0]))

        @contextlib.contextmanager
        def stream(s):
            self.current.append(s.name)
            with scope("stream", s.name):
                yield
            self.current.pop()

        @contextlib.contextmanager
        def graph(g, stream=None, capture_error_mode="global"):
            # as torch's: the capture stream becomes the current one for the body
            self.captured, self.capturing = g, (stream.name, capture_error_mode)
            self.current.append(stream.name)
            with scope("graph", stream.name, capture_error_mode):
                yield
            self.current.pop()
            self.capturing = None

        monkeypatch.setattr(torch.cuda, "device", lambda d: scope("device", str(d)))
        monkeypatch.setattr(torch.cuda, "Stream", Stream)
        monkeypatch.setattr(torch.cuda, "stream", stream)
        monkeypatch.setattr(torch.cuda, "current_stream", lambda: Stream(self.current[-1]))
        monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
        monkeypatch.setattr(torch.cuda, "graph", graph)

    def step(self):
        """The recorded function: logs the stream it runs on and whether it is being captured."""
        n = sum(e[0] == "run" for e in self.log) + 1
        self.log.append(("run", n, self.current[-1], self.capturing))
        return f"outputs of run {n}"


def test_the_capture_warms_up_and_records_on_one_side_stream_of_the_models_device(monkeypatch):
    """torch's recipe (docs: CUDA graphs, whole-network capture), and thread_local capture: three
    warm-ups on a side stream that waited for the current one, the current stream waits for
    them, the capture is on that same side stream, all on the model's device. The outputs are
    the captured run's; nothing replays until asked."""
    cuda = RecordedCuda(monkeypatch)
    replay, outputs = step_graph.cuda_capture(cuda.step, torch.device("cuda:1"))
    assert outputs == "outputs of run 4"
    assert cuda.log == [
        ("enter", "device", "cuda:1"),
        ("wait", "side", "default"),
        ("enter", "stream", "side"),
        ("run", 1, "side", None), ("run", 2, "side", None), ("run", 3, "side", None),
        ("exit", "stream"),
        ("wait", "default", "side"),
        ("enter", "graph", "side", "thread_local"),
        ("run", 4, "side", ("side", "thread_local")),
        ("exit", "graph"),
        ("exit", "device"),
    ]
    assert isinstance(cuda.captured, torch.cuda.CUDAGraph) and replay == cuda.captured.replay
    replay()
    assert cuda.log[-1] == ("replay",)


def test_a_batch_of_another_shape_or_dtype_does_not_fit():
    x, y = _batches(1)[0]
    graph = StepGraph(_net(), x, y, capture=eager_capture)
    assert graph.fits(x, y)
    assert not graph.fits(x[:3], y[:3])
    assert not graph.fits(x.double(), y)
    assert not graph.fits(x, y.int())


def test_any_hook_that_would_run_python_in_the_step_is_seen():
    net = _net()
    modules, params = list(net.modules()), list(net.parameters())
    assert not hooked(modules, params)
    layer = net.layers[0]
    for register in (layer.register_forward_hook, layer.register_forward_pre_hook,
                     layer.register_full_backward_hook, layer.register_full_backward_pre_hook,
                     torch.nn.modules.module.register_module_forward_hook,
                     torch.nn.modules.module.register_module_forward_pre_hook,
                     torch.nn.modules.module.register_module_full_backward_hook,
                     torch.nn.modules.module.register_module_full_backward_pre_hook):
        handle = register(lambda *args: None)
        try:
            assert hooked(modules, params), register
        finally:
            handle.remove()
        assert not hooked(modules, params)
    for register in (params[0].register_hook, params[0].register_post_accumulate_grad_hook):
        handle = register(lambda *args: None)
        assert hooked(modules, params), register
        handle.remove()
    assert not hooked(modules, params)


def _fit(**changes):
    """What why_not reads of a LightningModule and its Trainer: a fit that can graph its step."""
    from types import SimpleNamespace

    trainer = SimpleNamespace(world_size=changes.pop("world_size", 1), precision=changes.pop("precision", "32-true"))
    return SimpleNamespace(trainer=trainer, automatic_optimization=changes.pop("automatic_optimization", False),
                           device=torch.device(changes.pop("device", "cuda")))


@pytest.mark.parametrize("changes, reason", [
    ({}, None),
    ({"automatic_optimization": True},
     "Lightning's automatic loop makes the step (trainer.gradient_clip_val or accumulate_grad_batches)"),
    ({"world_size": 2}, "more than one process (DDP)"),
    ({"device": "cpu"}, "the model is on cpu, not a CUDA device"),
    ({"precision": "bf16-mixed"}, "trainer.precision=bf16-mixed: autocast is not captured"),
    ({"precision": "16-mixed"}, "trainer.precision=16-mixed: autocast is not captured"),
])
def test_why_a_fit_cannot_graph_its_step(changes, reason):
    assert step_graph.why_not(_fit(**changes)) == reason


def test_anomaly_detection_keeps_the_step_eager():
    with torch.autograd.set_detect_anomaly(True):
        assert step_graph.why_not(_fit()) == "anomaly detection is on (trainer.detect_anomaly)"
    assert step_graph.why_not(_fit()) is None


def test_a_parameter_the_loss_does_not_use_gets_no_gradient_as_in_backward():
    net = _net()
    net.unused = torch.nn.Parameter(torch.ones(3))  # registered, never in the forward
    x, y = _batches(1)[0]
    graph = StepGraph(net, x, y, capture=eager_capture)
    graph.step(x, y)
    assert net.unused.grad is None and net.layers[0].weight.grad is not None


@pytest.mark.parametrize("value", ["maybe", "true", 1, None])
def test_cuda_graph_is_true_false_or_auto(value):
    from src.module import ClassifierModule

    with pytest.raises(ValueError, match=rf"^Invalid cuda_graph={re.escape(repr(value))}: must be true, false or auto$"):
        ClassifierModule(_net(), None, cuda_graph=value)
    assert ClassifierModule(_net(), None).cuda_graph is False  # the default, as in conf/module/classifier.yaml
    assert ClassifierModule(_net(), None, cuda_graph="auto").cuda_graph == "auto"


@pytest.fixture
def graphs_on_the_cpu(monkeypatch):
    """train() as on a GPU: the device is not a reason against a graph, steps are captured with
    eager_capture. Every other reason still counts."""
    real = step_graph.why_not

    def why_not(module):
        reason = real(module)
        return None if reason == "the model is on cpu, not a CUDA device" else reason

    monkeypatch.setattr(step_graph, "why_not", why_not)
    monkeypatch.setattr(step_graph, "cuda_capture", eager_capture)


def test_a_run_with_replayed_steps_writes_what_the_eager_run_writes(tmp_path, data_dir, graphs_on_the_cpu):
    """Through train(), every diagnostic on and logging every 5 steps, 2 epochs of 10 full batches
    and one of 100 images (drop_last=false): the same results.json numbers, TensorBoard points
    and figures; every full batch replayed, the short one eager."""

    keys = ("status", "val_scores", "train_losses", "train_scores", "test_acc", "global_step", "warnings")
    extra = ["data.drop_last=false", "data.train_subset=2660"]
    runs = what_runs_write(tmp_path, {"eager": ["module.cuda_graph=false", *extra],
                                      "graph": ["module.cuda_graph=true", *extra]}, keys)
    eager, graph = runs["eager"], runs["graph"]
    timing = [json_of(tmp_path / name)["timing"] for name in ("eager", "graph")]
    assert "graphed_steps" not in timing[0] and timing[1]["graphed_steps"] == 20
    eager.pop("seconds"), graph.pop("seconds")
    assert graph == eager
    assert eager["results"]["global_step"] == 22 and eager["histograms"] and eager["figures"]


@pytest.mark.parametrize("overrides, reason", [
    ([], "the model is on cpu, not a CUDA device"),
    (["+trainer.gradient_clip_val=1.0"],
     "Lightning's automatic loop makes the step (trainer.gradient_clip_val or accumulate_grad_batches)"),
])
def test_a_run_that_cannot_graph_its_step_trains_and_says_why(tmp_path, data_dir, overrides, reason, caplog):

    with caplog.at_level("WARNING", logger="src.module"):
        train(compose([*FAST, "module.cuda_graph=true", *overrides], tmp_path))
    said = [r.getMessage() for r in caplog.records if r.name == "src.module"]
    assert said == [f"module.cuda_graph=true: not used, {reason}"]  # on the terminal, once
    results = json_of(tmp_path)
    assert results["status"] == "ok" and results["timing"]["graphed_steps"] == 0
    assert results["timing"]["graph_not_used"] == reason
    assert warnings_of(results) == [f"module.cuda_graph=true: not used, {reason}"]


def test_auto_on_a_cpu_trains_eagerly_without_a_warning(tmp_path, data_dir, caplog):
    """cuda_graph=auto: a graph where the fit can have one; a CPU run is not a problem to warn
    about. results.json's timing still says why no step replayed."""

    with caplog.at_level("WARNING", logger="src.module"):
        train(compose([*FAST, "module.cuda_graph=auto"], tmp_path))
    assert not [r for r in caplog.records if r.name == "src.module"]
    results = json_of(tmp_path)
    assert results["status"] == "ok" and warnings_of(results) == []
    assert results["timing"]["graphed_steps"] == 0
    assert results["timing"]["graph_not_used"] == "the model is on cpu, not a CUDA device"


def test_auto_replays_where_it_can(tmp_path, data_dir, graphs_on_the_cpu):

    train(compose([*FAST, "module.cuda_graph=auto"], tmp_path))
    results = json_of(tmp_path)
    assert results["timing"]["graphed_steps"] == 10 and "graph_not_used" not in results["timing"]


def test_a_step_with_a_hook_on_the_network_runs_eagerly_and_calls_it(tmp_path, data_dir, graphs_on_the_cpu):
    """A callback of the user's that hooks a layer's forward on some steps: those steps run
    eagerly (the hook sees their batch), the others replay."""
    import pytorch_lightning as pl


    class HookEveryThirdStep(pl.Callback):
        seen: list[int] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx % 3 == 0:
                self.handle = pl_module.net.layers[0].register_forward_hook(
                    lambda *a: HookEveryThirdStep.seen.append(batch_idx))

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx % 3 == 0:
                self.handle.remove()

    import tests.test_step_graph as me  # the module train() imports by name

    me._CALLBACK = HookEveryThirdStep()
    train(compose([*FAST, "module.cuda_graph=true", "+callbacks.hook._target_=tests.test_step_graph._callback"],
                  tmp_path))
    assert HookEveryThirdStep.seen == [0, 3, 6, 9]
    results = json_of(tmp_path)
    assert results["global_step"] == 10 and results["timing"]["graphed_steps"] == 6  # steps 1, 2, 4, 5, 7, 8


def _callback():
    return _CALLBACK


_CALLBACK = None


@pytest.mark.parametrize("value", ["true", "auto"])
def test_a_capture_that_fails_leaves_the_run_eager_and_says_so(tmp_path, data_dir, graphs_on_the_cpu, monkeypatch,
                                                                caplog, value):
    """A failed capture is worth a warning under auto too: the fit could have had a graph."""

    def failing_capture(fn, device):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(step_graph, "cuda_capture", failing_capture)
    line = (f"module.cuda_graph={value}: not used, the capture failed (RuntimeError: operation not permitted when "
            "stream is capturing)")
    with caplog.at_level("WARNING", logger="src.module"):
        train(compose([*FAST, f"module.cuda_graph={value}"], tmp_path))
    assert [r.getMessage() for r in caplog.records if r.name == "src.module"] == [line]
    eager = tmp_path / "eager"
    train(compose([*FAST, "module.cuda_graph=false"], eager))
    results = json_of(tmp_path)
    assert results["status"] == "ok" and results["timing"]["graphed_steps"] == 0
    assert warnings_of(results) == [line]
    assert results["train_losses"] == json_of(eager)["train_losses"]
