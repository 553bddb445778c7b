"""Weight-initialisation schemes from the UvA-DL tutorial "Initialization and Optimization".

Each scheme is a small callable class: build it with its hyper-parameters (validated
up front, so a bad Hydra override fails before any training), then call it on a model::

    model = INIT_SCHEMES["kaiming"]()(model)      # or get_init("kaiming")(model)

A scheme initialises every ``nn.Linear`` of the model in place, in ``model.modules()``
order, and returns the model. "First layer" means the first ``nn.Linear`` found: it sees
the raw input rather than the output of a non-linearity, which matters for Kaiming.

Randomness comes from the global torch RNG (the app calls ``seed_everything`` first),
so the same seed gives the same weights; pass ``generator=`` for a private stream.
Notation: a weight has shape (d_out, d_in); d_in = fan-in, d_out = fan-out.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "Const",
    "Normal",
    "EqualVar",
    "Xavier",
    "XavierNormal",
    "Kaiming",
    "KaimingGain",
    "Default",
    "INIT_SCHEMES",
    "get_init",
]


def _linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


class InitScheme:
    """Base class: subclasses implement ``init_linear(layer, index)``."""

    def __init__(self, generator: torch.Generator | None = None):
        self.generator = generator

    @torch.no_grad()  # initialising must not be recorded by autograd
    def __call__(self, model: nn.Module) -> nn.Module:
        for index, layer in enumerate(_linears(model)):
            self.init_linear(layer, index)
        return model

    def init_linear(self, layer: nn.Linear, index: int) -> None:
        raise NotImplementedError

    # helpers shared by the schemes ------------------------------------------------
    def _normal(self, tensor: torch.Tensor, std: float) -> None:
        tensor.normal_(0.0, std, generator=self.generator)

    def _zero_bias(self, layer: nn.Linear) -> None:
        if layer.bias is not None:
            layer.bias.zero_()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k != "generator")
        return f"{type(self).__name__}({args})"


def _real_number(name: str, value, accepted: str) -> float:
    """A finite int or float; `true` (read as 1) and '0.1' (a quoted string) are typos."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"Invalid {name}={value!r}: {accepted}")
    return float(value)


class Const(InitScheme):
    """All parameters, biases included, = ``fill`` (tutorial ``const_init``; symmetric, fails)."""

    def __init__(self, fill: float = 0.005):
        super().__init__()
        self.fill = _real_number("fill", fill, "must be a finite number")

    def init_linear(self, layer, index):
        for p in layer.parameters():
            p.fill_(self.fill)


class Normal(InitScheme):
    """All parameters, biases included, ~ N(0, std²) (tutorial ``var_init``; same std everywhere)."""

    def __init__(self, std: float = 0.01, generator: torch.Generator | None = None):
        super().__init__(generator)
        # inf would draw inf/NaN weights, and no theory applies to them
        self.std = _real_number("std", std, "must be > 0 and finite")
        if not self.std > 0:
            raise ValueError(f"Invalid std={std!r}: must be > 0 and finite")

    def init_linear(self, layer, index):
        for p in layer.parameters():
            self._normal(p, self.std)


class EqualVar(InitScheme):
    """W ~ N(0, 1/d_in), b = 0: keeps the activation variance for a linear network."""

    def init_linear(self, layer, index):
        self._normal(layer.weight, 1 / math.sqrt(layer.in_features))
        self._zero_bias(layer)


class Xavier(InitScheme):
    """W ~ U[-a, a], a = √6/√(d_in + d_out) (variance 2/(d_in + d_out)), b = 0 (Glorot & Bengio)."""

    def init_linear(self, layer, index):
        bound = math.sqrt(6) / math.sqrt(layer.in_features + layer.out_features)
        layer.weight.uniform_(-bound, bound, generator=self.generator)
        self._zero_bias(layer)


class XavierNormal(InitScheme):
    """W ~ N(0, 2/(d_in + d_out)), b = 0: Xavier with a Gaussian instead of a uniform."""

    def init_linear(self, layer, index):
        self._normal(layer.weight, math.sqrt(2 / (layer.in_features + layer.out_features)))
        self._zero_bias(layer)


class Kaiming(InitScheme):
    """Tutorial ``kaiming_init``: first layer W ~ N(0, 1/d_in), the others N(0, 2/d_in), b = 0.

    The factor 2 compensates ReLU zeroing half its inputs; the first layer gets 1 because
    its input (the image) has not been through a ReLU.
    """

    def init_linear(self, layer, index):
        gain = 1.0 if index == 0 else math.sqrt(2)
        self._normal(layer.weight, gain / math.sqrt(layer.in_features))
        self._zero_bias(layer)


# Activation names of the app's BaseNetwork (``model.act_fn_name``) -> name understood by
# torch.nn.init.calculate_gain. calculate_gain knows no GELU/ELU; both equal ReLU for x > 0
# and differ only on the negative side, so we use ReLU's √2, the usual practice (Clevert et
# al. 2016 trained ELU nets with He init). For reference, the exact second-moment gain
# 1/√E[f(z)²], z ~ N(0, 1) -- the tutorial's ReLU argument, which gives √2 for ReLU -- is
# ≈1.53 for GELU and ≈1.25 for ELU(α=1), so √2 is within 8 % resp. 14 % of it.
_GAIN_ALIASES = {"identity": "linear", "gelu": "relu", "elu": "relu"}
_GAIN_NAMES = ("linear", "sigmoid", "tanh", "relu", "leaky_relu", "selu")
KAIMING_GAIN_NONLINEARITIES = tuple(sorted(set(_GAIN_NAMES) | set(_GAIN_ALIASES)))


class KaimingGain(InitScheme):
    """Gain-aware Kaiming: first layer W ~ N(0, 1/d_in), the others std = gain/√d_in, b = 0.

    ``gain = torch.nn.init.calculate_gain(nonlinearity)`` (√2 relu, 5/3 tanh, 1 identity, ...).
    With ``nonlinearity=None`` it is read from ``model.act_fn_name`` when called, so one
    config fits every activation; gelu and elu use ReLU's gain (see ``_GAIN_ALIASES``), and
    leaky_relu takes its slope from the model's first ``nn.LeakyReLU`` (default 0.01).
    """

    def __init__(self, nonlinearity: str | None = None, generator: torch.Generator | None = None):
        super().__init__(generator)
        if nonlinearity is not None:
            _check_nonlinearity(nonlinearity)
        self.nonlinearity = nonlinearity

    def gain_for(self, model: nn.Module) -> float:
        """calculate_gain of this scheme's nonlinearity, or of the model's `act_fn_name`."""
        name = self.nonlinearity
        if name is None:
            name = getattr(model, "act_fn_name", None)
            if name is None:
                raise ValueError(
                    "KaimingGain(nonlinearity=None) needs model.act_fn_name; "
                    f"or pass nonlinearity, one of {list(KAIMING_GAIN_NONLINEARITIES)}"
                )
            _check_nonlinearity(name)
        slope = next(
            (m.negative_slope for m in model.modules() if isinstance(m, nn.LeakyReLU)), 0.01
        )
        return nn.init.calculate_gain(_GAIN_ALIASES.get(name, name), slope if name == "leaky_relu" else None)

    def __call__(self, model: nn.Module) -> nn.Module:
        self._gain = self.gain_for(model)
        return super().__call__(model)

    def init_linear(self, layer, index):
        gain = 1.0 if index == 0 else self._gain
        self._normal(layer.weight, gain / math.sqrt(layer.in_features))
        self._zero_bias(layer)

    def __repr__(self) -> str:
        return f"KaimingGain(nonlinearity={self.nonlinearity!r})"


def _check_nonlinearity(name: str) -> None:
    if name not in KAIMING_GAIN_NONLINEARITIES:
        raise ValueError(
            f"Invalid nonlinearity={name!r}: must be one of {list(KAIMING_GAIN_NONLINEARITIES)}"
        )


class Default(InitScheme):
    """Leave PyTorch's own nn.Linear init (Kaiming-uniform, a=√5: W, b ~ U[±1/√d_in]) untouched."""

    def __call__(self, model: nn.Module) -> nn.Module:
        return model


INIT_SCHEMES: dict[str, type[InitScheme]] = {
    "const": Const,
    "normal": Normal,
    "equal_var": EqualVar,
    "xavier": Xavier,
    "xavier_normal": XavierNormal,
    "kaiming": Kaiming,
    "kaiming_gain": KaimingGain,
    "default": Default,
}


def get_init(name: str, **kwargs) -> InitScheme:
    """Build the scheme registered under ``name`` with ``kwargs``, e.g. ``get_init("normal", std=0.1)``."""
    if name not in INIT_SCHEMES:
        raise ValueError(f"Unknown init scheme {name!r}: must be one of {list(INIT_SCHEMES)}")
    return INIT_SCHEMES[name](**kwargs)
