"""The tutorial's BaseNetwork: Linear layers with an activation between them."""

from __future__ import annotations

import torch
from torch import nn

from src.errors import ConfigError, is_int

ACT_FNS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "identity": nn.Identity,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "elu": nn.ELU,
}


class BaseNetwork(nn.Module):
    """MLP `input_size → hidden_sizes… → num_classes`.

    `layers` alternates Linear and activation exactly as the tutorial's ModuleList, so the
    linear layers keep the tutorial's names: layers.0, layers.2, layers.4, layers.6, layers.8.
    """

    def __init__(self, act_fn: str = "relu", input_size: int = 784, num_classes: int = 10,
                 hidden_sizes: list[int] = (512, 256, 256, 128)):
        super().__init__()
        if act_fn not in ACT_FNS:
            raise ConfigError(f"model.act_fn={act_fn!r} is not one of: {', '.join(ACT_FNS)}")
        if not isinstance(hidden_sizes, (str, int, float)):  # a list, tuple or config list
            hidden_sizes = list(hidden_sizes)
        if not isinstance(hidden_sizes, list) or not hidden_sizes or not all(
                is_int(h) and h > 0 for h in hidden_sizes):  # (`abc` was read letter by letter, 1.5 as 1)
            raise ConfigError(f"model.hidden_sizes={hidden_sizes!r} must be a non-empty list of positive integers")
        if not (is_int(input_size) and is_int(num_classes)) or input_size <= 0 or num_classes <= 0:
            raise ConfigError(f"model.input_size={input_size!r} and model.num_classes={num_classes!r} must be "
                              "positive integers")
        sizes = [input_size, *hidden_sizes]
        layers: list[nn.Module] = []
        for d_in, d_out in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(d_in, d_out), ACT_FNS[act_fn]()]
        layers.append(nn.Linear(sizes[-1], num_classes))
        self.layers = nn.ModuleList(layers)
        self.act_fn_name = act_fn
        self.config = {"act_fn": act_fn, "input_size": input_size, "num_classes": num_classes,
                       "hidden_sizes": hidden_sizes}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(x.size(0), -1)
        for layer in self.layers:
            x = layer(x)
        return x
