"""Hand-written optimizers from the UvA-DL tutorial "Initialization and Optimization".

The tutorial implements SGD, SGD with momentum and Adam on top of a tiny
``OptimizerTemplate``. Here the same update rules are real ``torch.optim.Optimizer``
subclasses, so they work with ``param_groups``, ``state_dict()``/``load_state_dict()``,
LR schedulers and Lightning, and can be swapped with ``torch.optim`` one for one.

Structure follows ``torch/optim/adam.py``: ``step()`` collects the parameters that have a
gradient (and lazily creates their state), then hands the lists to one of two
implementations of the same formula:

* ``_single_tensor_*``: a per-parameter loop, the reference. It is the tutorial's
  ``update_param`` transcribed literally, op for op (same temporaries, same order), so with
  ``foreach=False`` these classes are bit-identical to the tutorial's ``OptimizerTemplate``
  optimizers. That matters where the dynamics are chaotic (SGD at lr 10 on the loss-surface
  playground's ravine): there any different rounding, e.g. a fused ``add(alpha=...)``,
  grows into a visibly different trajectory.
* ``_multi_tensor_*``: the same maths with ``torch._foreach_*`` ops, which update all
  tensors of a (device, dtype) bucket in a few kernel launches. This is the default
  (``foreach=None`` means ``True``).

Weight decay is classic coupled L2: ``g <- g + wd * w`` before the update rule (like
``torch.optim.SGD``/``Adam``, not AdamW).
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch import Tensor
from torch.optim import Optimizer

__all__ = ["SGD", "SGDMomentum", "Adam"]


# -----------------------------------------------------------------------------
# argument checks: one-line messages naming the bad value and the accepted range


def _number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"Invalid {name}={value!r}: must be a number")
    return value


def _check_lr(lr: float) -> None:
    if not 0.0 < _number("lr", lr) < math.inf:  # `not <` also rejects NaN; inf diverges at step 1
        raise ValueError(f"Invalid learning rate lr={lr!r}: must be > 0 and finite")


def _check_weight_decay(weight_decay: float) -> None:
    if not 0.0 <= _number("weight_decay", weight_decay) < math.inf:
        raise ValueError(f"Invalid weight_decay={weight_decay!r}: must be >= 0 and finite")


def _check_beta(name: str, beta: float) -> None:
    if not 0.0 <= _number(name, beta) < 1.0:
        raise ValueError(f"Invalid {name}={beta!r}: must be in [0, 1)")


def _resolve_foreach(foreach: bool | None) -> bool:
    # None means "use the fast path": every device torch supports has _foreach_ kernels
    # (on CPU they fall back to a C++ loop, still without the Python overhead).
    return True if foreach is None else bool(foreach)


def _group_by_device_and_dtype(*tensor_lists: list[Tensor]) -> list[tuple[list[Tensor], ...]]:
    """Split parallel tensor lists into buckets sharing the first list's (device, dtype).

    _foreach_ ops need all tensors of one call on one device with one dtype; a model in
    mixed precision or spread over devices is split here, order preserved within a bucket.
    """
    buckets: dict[tuple, list[int]] = defaultdict(list)
    for i, t in enumerate(tensor_lists[0]):
        buckets[(t.device, t.dtype)].append(i)
    return [tuple([lst[i] for i in idx] for lst in tensor_lists) for idx in buckets.values()]


def _evaluate(closure):
    """Run Lightning's closure (forward + backward) with grad enabled; `step` itself is no_grad."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def _grad_of(p: Tensor) -> Tensor:
    if p.grad.is_sparse:
        raise RuntimeError("sparse gradients are not supported by the hand-written optimizers")
    return p.grad


# -----------------------------------------------------------------------------
# SGD


class SGD(Optimizer):
    r"""Plain stochastic gradient descent.

    w <- w - lr * g            (g <- g + weight_decay * w first, if weight_decay > 0)

    Identical to ``torch.optim.SGD(params, lr, weight_decay=...)``; it keeps no state.
    """

    def __init__(
        self, params, lr: float = 0.1, weight_decay: float = 0.0, foreach: bool | None = None
    ):
        _check_lr(lr)
        _check_weight_decay(weight_decay)
        defaults = dict(lr=lr, weight_decay=weight_decay, foreach=foreach)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        """Performs one update; ``closure`` re-evaluates the model and returns the loss."""
        loss = _evaluate(closure)

        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]  # skip grad=None
            grads = [_grad_of(p) for p in params]
            if not params:
                continue
            fn = _multi_tensor_sgd if _resolve_foreach(group["foreach"]) else _single_tensor_sgd
            fn(params, grads, lr=group["lr"], weight_decay=group["weight_decay"])
        return loss


def _single_tensor_sgd(params, grads, *, lr, weight_decay):
    for p, g in zip(params, grads, strict=True):
        if weight_decay != 0:  # skipped entirely at 0, so no op touches the bits
            g = g + weight_decay * p  # out of place: never modify p.grad
        # the tutorial's SGD.update_param, op for op
        p_update = -lr * g
        p.add_(p_update)


def _multi_tensor_sgd(params, grads, *, lr, weight_decay):
    for dev_params, dev_grads in _group_by_device_and_dtype(params, grads):
        if weight_decay != 0:
            dev_grads = torch._foreach_add(dev_grads, dev_params, alpha=weight_decay)
        torch._foreach_add_(dev_params, dev_grads, alpha=-lr)


# -----------------------------------------------------------------------------
# SGD with momentum


class SGDMomentum(Optimizer):
    r"""SGD with momentum as an exponential moving average of the gradients (tutorial form).

    m <- momentum * m + (1 - momentum) * g        (m starts at 0, so m_1 = (1 - momentum) g_1)
    w <- w - lr * m

    State: ``self.state[p]["momentum_buffer"]`` (= m).

    Versus ``torch.optim.SGD(momentum=β, dampening=β)``: torch uses the same recursion
    ``buf <- β buf + (1 - dampening) g`` but on the very first step it sets ``buf = g``
    without dampening, i.e. its buffer starts ``1 / (1 - β)`` times (10x for β=0.9) larger
    than ours and that extra ``β^t g_1`` term decays away only geometrically. The two
    therefore agree exactly only once the first step is accounted for (e.g. torch's buffer
    initialised to ``(1 - β) g_1``); from then on every update is identical. Torch's default
    ``dampening=0`` is a different parametrisation altogether (``buf <- β buf + g``, i.e. the
    effective lr is ``1 / (1 - β)`` times larger).
    """

    def __init__(
        self,
        params,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
    ):
        _check_lr(lr)
        _check_beta("momentum", momentum)
        _check_weight_decay(weight_decay)
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, foreach=foreach)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        """Performs one update; ``closure`` re-evaluates the model and returns the loss."""
        loss = _evaluate(closure)

        for group in self.param_groups:
            params, grads, bufs = [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if len(state) == 0:  # lazy state init: m_0 = 0
                    state["momentum_buffer"] = torch.zeros_like(
                        p, memory_format=torch.preserve_format
                    )
                params.append(p)
                grads.append(_grad_of(p))
                bufs.append(state["momentum_buffer"])
            if not params:
                continue
            fn = (
                _multi_tensor_sgd_momentum
                if _resolve_foreach(group["foreach"])
                else _single_tensor_sgd_momentum
            )
            fn(
                params,
                grads,
                bufs,
                lr=group["lr"],
                momentum=group["momentum"],
                weight_decay=group["weight_decay"],
            )
        return loss


def _single_tensor_sgd_momentum(params, grads, bufs, *, lr, momentum, weight_decay):
    for p, g, m in zip(params, grads, bufs, strict=True):
        if weight_decay != 0:
            g = g + weight_decay * p
        # the tutorial's SGDMomentum.update_param, op for op; copy_ stores the new m in the
        # state tensor (the tutorial rebinds a dict entry) without changing a bit
        m.copy_((1 - momentum) * g + momentum * m)
        p_update = -lr * m
        p.add_(p_update)


def _multi_tensor_sgd_momentum(params, grads, bufs, *, lr, momentum, weight_decay):
    for dev_params, dev_grads, dev_bufs in _group_by_device_and_dtype(params, grads, bufs):
        if weight_decay != 0:
            dev_grads = torch._foreach_add(dev_grads, dev_params, alpha=weight_decay)
        # β m + (1 - β) g == m + (1 - β)(g - m): one fused lerp kernel instead of mul + add
        # (torch.optim.Adam does the same for its first moment); equal up to float rounding.
        torch._foreach_lerp_(dev_bufs, dev_grads, 1 - momentum)
        torch._foreach_add_(dev_params, dev_bufs, alpha=-lr)


# -----------------------------------------------------------------------------
# Adam


class Adam(Optimizer):
    r"""Adam (Kingma & Ba, 2015) exactly as in the tutorial.

    m <- β1 m + (1 - β1) g,   v <- β2 v + (1 - β2) g²,   t <- t + 1
    m̂ = m / (1 - β1^t),       v̂ = v / (1 - β2^t)
    w <- w - lr * m̂ / (√v̂ + eps)

    State: ``step`` (t, a Python float: plain floats survive ``state_dict()`` round trips
    untouched, and reading them costs no device sync), ``exp_avg`` (m), ``exp_avg_sq`` (v).
    Mathematically identical to ``torch.optim.Adam`` without amsgrad.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
    ):
        _check_lr(lr)
        if len(betas) != 2:
            raise ValueError(
                f"Invalid betas={betas!r}: must be a pair (beta1, beta2), each in [0, 1)"
            )
        _check_beta("betas[0]", betas[0])
        _check_beta("betas[1]", betas[1])
        if not 0.0 < _number("eps", eps) < math.inf:
            raise ValueError(f"Invalid eps={eps!r}: must be > 0 and finite")
        _check_weight_decay(weight_decay)
        # tuple() so a Hydra ListConfig / list becomes a plain, picklable pair
        defaults = dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, foreach=foreach
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        """Performs one update; ``closure`` re-evaluates the model and returns the loss."""
        loss = _evaluate(closure)

        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if len(state) == 0:  # lazy state init: t = 0, m_0 = v_0 = 0
                    state["step"] = 0.0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                # t is per parameter (as in torch): a parameter without grad doesn't advance
                state["step"] += 1
                params.append(p)
                grads.append(_grad_of(p))
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
                steps.append(state["step"])
            if not params:
                continue
            beta1, beta2 = group["betas"]
            fn = _multi_tensor_adam if _resolve_foreach(group["foreach"]) else _single_tensor_adam
            fn(
                params, grads, exp_avgs, exp_avg_sqs, steps,
                lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
                weight_decay=group["weight_decay"],
            )  # fmt: skip
        return loss


def _single_tensor_adam(
    params, grads, exp_avgs, exp_avg_sqs, steps, *, lr, beta1, beta2, eps, weight_decay
):
    for p, g, m, v, t in zip(params, grads, exp_avgs, exp_avg_sqs, steps, strict=True):
        if weight_decay != 0:
            g = g + weight_decay * p
        # the tutorial's Adam.update_param, op for op (same temporaries, same order)
        m.copy_((1 - beta1) * g + beta1 * m)  # m = β1 m + (1 - β1) g
        v.copy_((1 - beta2) * (g) ** 2 + beta2 * v)  # v = β2 v + (1 - β2) g²
        bias_correction_1 = 1 - beta1**t
        bias_correction_2 = 1 - beta2**t
        p_2nd_mom = v / bias_correction_2
        p_mom = m / bias_correction_1
        p_lr = lr / (torch.sqrt(p_2nd_mom) + eps)  # w = w - η m̂ / (√v̂ + ε)
        p_update = -p_lr * p_mom
        p.add_(p_update)


def _multi_tensor_adam(
    params, grads, exp_avgs, exp_avg_sqs, steps, *, lr, beta1, beta2, eps, weight_decay
):
    for dev_params, dev_grads, dev_m, dev_v, dev_steps in _group_by_device_and_dtype(
        params, grads, exp_avgs, exp_avg_sqs, steps
    ):
        if weight_decay != 0:
            dev_grads = torch._foreach_add(dev_grads, dev_params, alpha=weight_decay)
        torch._foreach_lerp_(dev_m, dev_grads, 1 - beta1)  # β1 m + (1 - β1) g, one kernel
        torch._foreach_mul_(dev_v, beta2)
        torch._foreach_addcmul_(dev_v, dev_grads, dev_grads, 1 - beta2)
        # Fold both bias corrections into per-tensor scalars instead of materialising m̂, v̂:
        #   η m̂ / (√v̂ + ε) = η/bc1 · m / (√v/√bc2 + ε) = (η √bc2 / bc1) · m / (√v + ε √bc2)
        # so the only temporary is the denominator and it takes 2 kernels (sqrt, add), one
        # fewer than torch.optim.Adam's sqrt/div/add. Same value up to float rounding.
        bc2_sqrt = [math.sqrt(1 - beta2**t) for t in dev_steps]
        step_sizes = [-lr * b2 / (1 - beta1**t) for t, b2 in zip(dev_steps, bc2_sqrt, strict=True)]
        eps_scaled = [eps * b2 for b2 in bc2_sqrt]
        denom = torch._foreach_sqrt(dev_v)
        torch._foreach_add_(denom, eps_scaled)
        torch._foreach_addcdiv_(dev_params, dev_m, denom, step_sizes)
