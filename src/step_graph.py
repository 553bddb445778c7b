"""A training step's forward, loss and backward as one CUDA graph (`module.cuda_graph=true`).

Why: on a GPU this MLP's step is launch-bound. Its ~30 kernels take microseconds of GPU time,
but launching each one from Python through autograd takes the host milliseconds (docs/gpu.md:
2614 µs a step of the plain PyTorch loop on an H200). A CUDA graph records the kernels once and
replays them with one launch.

Only the forward, the loss and the backward are recorded. The optimizer step stays as it is
(the hand-written optimizers, their Python-number step counts, Lightning's
on_before_optimizer_step hooks the diagnostics use), so a replayed step computes what the eager
step computes: the same kernels on the same inputs.

What a graph asks of a step, and what this file does about it:
  - fixed tensors: each batch is copied into the graph's input tensors, and its outputs (logits,
    loss, gradients) are the same tensors every replay; the caller clones what it keeps;
  - fixed shapes: a batch of another shape (the last one without drop_last) runs eagerly;
  - no Python inside the step: a module or parameter hook would run at capture only, so a step
    while one is registered runs eagerly (the diagnostics register theirs around their own
    passes, never around a training step);
  - one process on one CUDA device, 32-bit, no anomaly detection: otherwise `why_not` says why
    and the fit runs eagerly (results.json's warnings carry that line).
Lightning's on_before_backward / on_after_backward hooks are not called on a replayed step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.modules import module as nn_module

# capture(fn, device) -> (replay, outputs): records fn's kernels; replay() re-runs them, writing
# into the same output tensors. Nothing is computed until the first replay.
Capture = Callable[[Callable[[], tuple], torch.device], tuple[Callable[[], None], tuple]]


def cuda_capture(fn, device: torch.device, warmup: int = 3):
    """torch's recipe: a few eager runs on a side stream (cuBLAS handles and workspaces,
    autograd's lazy state), then one run under capture. The capture uses that same stream, on
    the model's device: a handle or workspace first made during a capture fails it.

    capture_error_mode="thread_local": the capture starts at the first training step, while a
    DataLoader with workers (data.pipeline=torchvision on a GPU) has its pin-memory thread
    allocating pinned buffers for the next batches. In the default "global" mode that thread's
    CUDA calls would break the capture and fail the thread, and with it the run. They touch
    neither this stream nor the graph, so only this thread's calls are checked."""
    with torch.cuda.device(device):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=side, capture_error_mode="thread_local"):
            outputs = fn()
    return graph.replay, outputs


def eager_capture(fn, device: torch.device | None = None):
    """A stand-in for tests on a CPU: replay() runs fn again and copies its results into the
    first run's tensors, which start out NaN, the aliasing and the "nothing before the first
    replay" of a real graph's outputs."""
    outputs = fn()
    for t in _tensors(outputs):
        t.fill_(float("nan"))

    def replay():
        for old, new in zip(_tensors(outputs), _tensors(fn()), strict=True):
            old.copy_(new)

    return replay, outputs


def _tensors(outputs) -> list[torch.Tensor]:
    logits, loss, grads = outputs
    return [logits, loss, *(g for g in grads if g is not None)]


def why_not(module) -> str | None:
    """Why the fit of this LightningModule cannot graph its step, or None when it can."""
    trainer = module.trainer
    if module.automatic_optimization:
        return "Lightning's automatic loop makes the step (trainer.gradient_clip_val or accumulate_grad_batches)"
    if trainer.world_size > 1:
        return "more than one process (DDP)"
    if module.device.type != "cuda":
        return f"the model is on {module.device.type}, not a CUDA device"
    if str(trainer.precision) != "32-true":
        return f"trainer.precision={trainer.precision}: autocast is not captured"
    if torch.is_anomaly_enabled():
        return "anomaly detection is on (trainer.detect_anomaly)"
    return None


def hooked(modules: list[torch.nn.Module], params: list[torch.Tensor]) -> bool:
    """Whether Python would run inside the step: a module hook (global or on one of `modules`),
    or a parameter's gradient hook."""
    if (nn_module._global_forward_hooks or nn_module._global_forward_pre_hooks
            or nn_module._global_backward_hooks or nn_module._global_backward_pre_hooks):
        return True
    if any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
           for m in modules):
        return True
    return any(p._backward_hooks or getattr(p, "_post_accumulate_grad_hooks", None) for p in params)


class StepGraph:
    """`net`'s forward, cross-entropy loss and parameter gradients on one batch shape, recorded
    once (`capture`, default CUDA) and replayed by `step(x, y)`."""

    def __init__(self, net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, capture: Capture = cuda_capture):
        self.net = net
        self.modules = list(net.modules())
        self.params = [p for p in net.parameters() if p.requires_grad]
        self.x, self.y = x.detach().clone(), y.detach().clone()
        self.replays = 0
        self._replay, (self.logits, self.loss, self.grads) = capture(self._forward_backward, x.device)

    def _forward_backward(self):
        logits = self.net(self.x)
        loss = F.cross_entropy(logits, self.y)
        # autograd.grad, not backward(): the gradients are the graph's own output tensors, and
        # no AccumulateGrad adds into whatever .grad holds between replays.
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        return logits.detach(), loss.detach(), grads

    def fits(self, x: torch.Tensor, y: torch.Tensor) -> bool:
        """Whether this batch can be replayed: the captured shapes, dtypes and device, no hooks."""
        return (x.shape == self.x.shape and y.shape == self.y.shape and x.dtype == self.x.dtype
                and y.dtype == self.y.dtype and x.device == self.x.device
                and not hooked(self.modules, self.params))

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, loss and backward of (x, y): sets every parameter's .grad (as backward()
        after zero_grad() does) and returns (logits, loss), overwritten by the next replay."""
        self.x.copy_(x)
        self.y.copy_(y)
        self._replay()
        for p, g in zip(self.params, self.grads, strict=True):
            p.grad = g
        self.replays += 1
        return self.logits, self.loss
