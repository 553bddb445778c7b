"""Tests for the initialisation schemes in src/init.py, on the tutorial's MLP shape."""

import copy
import math
from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from src.init import (
    INIT_SCHEMES,
    Const,
    Default,
    EqualVar,
    InitScheme,
    Kaiming,
    KaimingGain,
    Normal,
    Xavier,
    XavierNormal,
    get_init,
)

CONF = Path(__file__).resolve().parents[1] / "conf"
SIZES = [784, 512, 256, 256, 128, 10]  # tutorial BaseNetwork: 784-512-256-256-128-10

ACTS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "identity": nn.Identity,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "elu": nn.ELU,
}


class MLP(nn.Module):
    """Stand-in for the app's BaseNetwork: ModuleList of Linear + activation, act_fn_name."""

    def __init__(self, act_fn_name="relu", act=None):
        super().__init__()
        self.act_fn_name = act_fn_name
        layers = []
        for d_in, d_out in zip(SIZES[:-2], SIZES[1:-1], strict=True):
            layers += [nn.Linear(d_in, d_out), act if act is not None else ACTS[act_fn_name]()]
        layers.append(nn.Linear(SIZES[-2], SIZES[-1]))
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def linears(model):
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def fresh_model(act_fn_name="relu", seed=0):
    torch.manual_seed(seed)
    return MLP(act_fn_name)


def assert_var(t: torch.Tensor, expected: float, what: str):
    """Sample variance (about the known mean 0) within sampling error of ``expected``.

    The relative s.d. of a variance estimate is sqrt((kurtosis - 1) / n), at most
    sqrt(2 / n) for the normal and uniform; allow 6 of those but never less than 5 %,
    i.e. 5 % for every layer here with >= 30k weights, ~24 % for the 1280-weight output layer.
    """
    n = t.numel()
    var = t.double().pow(2).mean().item()
    tol = max(0.05, 6 * math.sqrt(2 / n))
    assert abs(var / expected - 1) <= tol, (
        f"{what}: var {var:.3e} vs {expected:.3e} (tol {tol:.0%})"
    )
    assert abs(t.double().mean().item()) <= 6 * math.sqrt(expected / n), f"{what}: mean not 0"


# expected weight variance of Linear number i (d_in -> d_out); None: biases are not zeroed
EXPECTED = {
    "normal": (lambda i, d_in, d_out: 0.01**2, "normal"),
    "equal_var": (lambda i, d_in, d_out: 1 / d_in, "zero"),
    "xavier": (lambda i, d_in, d_out: 2 / (d_in + d_out), "zero"),
    "xavier_normal": (lambda i, d_in, d_out: 2 / (d_in + d_out), "zero"),
    "kaiming": (lambda i, d_in, d_out: (1 if i == 0 else 2) / d_in, "zero"),
    "kaiming_gain": (lambda i, d_in, d_out: (1 if i == 0 else 2) / d_in, "zero"),  # relu
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_weight_variance_matches_formula(name):
    var_of, bias = EXPECTED[name]
    model = get_init(name)(fresh_model())
    for i, layer in enumerate(linears(model)):
        d_out, d_in = layer.weight.shape
        assert_var(layer.weight, var_of(i, d_in, d_out), f"{name} layer {i} weight")
        if bias == "zero":
            assert torch.equal(layer.bias, torch.zeros_like(layer.bias)), f"layer {i} bias"
        else:  # tutorial's var_init samples the biases too
            assert_var(layer.bias, var_of(i, d_in, d_out), f"{name} layer {i} bias")


def test_xavier_uniform_bounds_and_xavier_normal_shape():
    model = Xavier()(fresh_model())
    for layer in linears(model):
        d_out, d_in = layer.weight.shape
        bound = math.sqrt(6) / math.sqrt(d_in + d_out)
        w = layer.weight
        assert w.abs().max() <= bound and w.abs().max() > 0.99 * bound  # fills the interval
    # the normal variant has tails beyond that bound (some |w| > bound for the 401k-weight layer)
    first = linears(XavierNormal()(fresh_model()))[0].weight
    assert first.abs().max() > math.sqrt(6) / math.sqrt(784 + 512)


@pytest.mark.parametrize(
    "act, gain",
    [
        ("relu", math.sqrt(2)),
        ("tanh", 5 / 3),
        ("identity", 1.0),
        ("leaky_relu", math.sqrt(2 / (1 + 0.01**2))),
        ("gelu", math.sqrt(2)),  # documented approximation: ReLU's gain
        ("elu", math.sqrt(2)),
    ],
)
def test_kaiming_gain_reads_act_fn_name(act, gain):
    model = KaimingGain()(fresh_model(act))
    for i, layer in enumerate(linears(model)):
        d_in = layer.in_features
        assert_var(layer.weight, (1.0 if i == 0 else gain**2) / d_in, f"{act} layer {i}")
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))


def test_kaiming_gain_explicit_and_leaky_slope_from_model():
    # explicit nonlinearity wins over act_fn_name
    model = KaimingGain("tanh")(fresh_model("relu"))
    assert_var(linears(model)[1].weight, (5 / 3) ** 2 / 512, "explicit tanh")
    # leaky_relu uses the model's own negative slope
    torch.manual_seed(0)
    model = KaimingGain()(MLP("leaky_relu", act=nn.LeakyReLU(0.2)))
    assert_var(linears(model)[1].weight, 2 / (1 + 0.2**2) / 512, "leaky 0.2")
    # no act_fn_name and no explicit nonlinearity: a clear error
    with pytest.raises(ValueError, match=r"^KaimingGain\(nonlinearity=None\) needs model\.act_fn_name; "
                                         r"or pass nonlinearity, one of \["):
        KaimingGain()(nn.Sequential(nn.Linear(4, 4)))


def test_kaiming_gain_relu_equals_tutorial_kaiming():
    a = KaimingGain("relu")(fresh_model(seed=3))
    torch.manual_seed(7)
    a = KaimingGain("relu")(a)
    b = fresh_model(seed=3)
    torch.manual_seed(7)
    b = Kaiming()(b)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)


def test_first_layer_is_first_linear_in_module_order():
    """'First layer' = first nn.Linear in model.modules(), wherever it sits."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Flatten(), nn.Sequential(nn.Linear(2000, 600)), nn.ReLU(), nn.Linear(600, 600)
    )
    model = Kaiming()(model)
    assert_var(model[1][0].weight, 1 / 2000, "first")
    assert_var(model[3].weight, 2 / 600, "second")


def test_const_sets_everything_to_fill():
    model = Const(fill=0.005)(fresh_model())
    for p in model.parameters():
        assert torch.equal(p, torch.full_like(p, 0.005))
    model = Const(fill=-0.25)(model)
    assert all(torch.equal(p, torch.full_like(p, -0.25)) for p in model.parameters())


def test_default_leaves_pytorch_init_untouched():
    model = fresh_model(seed=4)
    before = [p.clone() for p in model.parameters()]
    assert Default()(model) is model
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize("name", list(INIT_SCHEMES))
def test_same_seed_same_weights(name):
    def init(seed):
        model = fresh_model(seed=100)  # same architecture init; the scheme seed differs
        torch.manual_seed(seed)
        return get_init(name)(model)

    a, b, c = init(1), init(1), init(2)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    random = name not in ("const", "default")
    differs = any(
        not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True)
    )
    assert differs == random


@pytest.mark.parametrize(
    "name", ["normal", "equal_var", "xavier", "xavier_normal", "kaiming", "kaiming_gain"]
)
def test_private_generator(name):
    """generator= gives reproducible weights without touching the global RNG."""
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = get_init(name, generator=torch.Generator().manual_seed(5))(fresh_model(seed=9))
    torch.set_rng_state(state)
    b = get_init(name, generator=torch.Generator().manual_seed(5))(fresh_model(seed=9))
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_init_runs_without_autograd_and_returns_model():
    model = fresh_model()
    out = Kaiming()(model)
    assert out is model
    assert all(p.requires_grad and p.grad_fn is None for p in model.parameters())


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda: get_init("glorot"),
            r"Unknown init scheme 'glorot': must be one of \['const', 'normal', .*'default'\]",
        ),
        (lambda: Normal(std=-0.1), r"std=-0\.1: must be > 0"),
        (lambda: Normal(std=0.0), r"std=0\.0: must be > 0"),
        (lambda: get_init("normal", std=-1), r"std=-1: must be > 0"),
        (lambda: Const(fill=math.inf), r"fill=inf: must be a finite number"),
        (lambda: Const(fill=math.nan), r"fill=nan: must be a finite number"),
        (lambda: Normal(std=math.nan), r"^Invalid std=nan: must be > 0 and finite$"),
        (lambda: Normal(std=math.inf), r"^Invalid std=inf: must be > 0 and finite$"),
        (lambda: get_init("normal", std=-math.inf), r"^Invalid std=-inf: must be > 0 and finite$"),
        # `init.std=true` used to train with std 1.0 and `init.fill=false` with 0.0
        (lambda: Normal(std=True), r"^Invalid std=True: must be > 0 and finite$"),
        (lambda: Const(fill=False), r"^Invalid fill=False: must be a finite number$"),
        (lambda: Normal(std="0.1"), r"^Invalid std='0\.1': must be > 0 and finite$"),
        (lambda: Const(fill=[1]), r"^Invalid fill=\[1\]: must be a finite number$"),
        (lambda: KaimingGain("swish"), r"nonlinearity='swish': must be one of \[.*'relu'.*\]"),
        (
            lambda: KaimingGain()(MLP("swish", act=nn.SiLU())),
            r"nonlinearity='swish': must be one of",
        ),
    ],
)
def test_invalid_arguments(make, message):
    with pytest.raises(ValueError, match=message) as err:
        make()
    assert "\n" not in str(err.value)


def test_an_infinite_std_override_is_one_error_line_in_config_terms():
    """`init.std=inf` on the command line: refused as the CLI prints it, like `optim.lr=inf`."""
    from src.errors import in_group

    with pytest.raises(Exception) as err:
        hydra.utils.instantiate(OmegaConf.create({"_target_": "src.init.Normal", "std": math.inf}))
    assert in_group("init", err.value) == "init.std=inf: must be > 0 and finite"


def test_registry():
    assert INIT_SCHEMES == {
        "const": Const,
        "normal": Normal,
        "equal_var": EqualVar,
        "xavier": Xavier,
        "xavier_normal": XavierNormal,
        "kaiming": Kaiming,
        "kaiming_gain": KaimingGain,
        "default": Default,
    }
    assert get_init("normal", std=0.1).std == 0.1


@pytest.mark.parametrize("path", sorted((CONF / "init").glob("*.yaml")), ids=lambda p: p.stem)
def test_init_configs_instantiate(path):
    scheme = hydra.utils.instantiate(OmegaConf.load(path))
    assert type(scheme) is INIT_SCHEMES[path.stem]
    model = fresh_model()
    assert scheme(model) is model
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_init_config_set_is_complete():
    assert {p.stem for p in (CONF / "init").glob("*.yaml")} == set(INIT_SCHEMES)


# --- pinned by mutation testing (docs/testing.md) -------------------------------------------

RANDOM_SCHEMES = ["normal", "equal_var", "xavier", "xavier_normal", "kaiming", "kaiming_gain"]


@pytest.mark.parametrize("name", RANDOM_SCHEMES)
def test_generator_is_the_only_source_of_randomness(name):
    """With generator=, the weights depend on that generator alone: the global RNG is not
    drawn from (its state is unchanged), a different global seed gives the same weights, and a
    different generator seed gives different ones."""
    model = fresh_model(seed=9)

    def init(generator_seed, global_seed):
        torch.manual_seed(global_seed)
        before = torch.get_rng_state()
        out = get_init(name, generator=torch.Generator().manual_seed(generator_seed))(copy.deepcopy(model))
        assert torch.equal(torch.get_rng_state(), before), "the global RNG was drawn from"
        return out

    a, b, c = init(5, global_seed=1), init(5, global_seed=2), init(6, global_seed=1)
    for la, lb, lc in zip(linears(a), linears(b), linears(c), strict=True):
        assert torch.equal(la.weight, lb.weight)
        assert not torch.equal(la.weight, lc.weight)


def _gain_ratios(model_a, model_b):
    """weight(a) / weight(b) per Linear, for two models initialised from the same generator
    seed: the normal draws are the same, only the std differs, so the ratio is std_a / std_b."""
    return [(la.weight / lb.weight).flatten() for la, lb in zip(linears(model_a), linears(model_b), strict=True)]


def _same_draws(scheme_a, scheme_b, model_a, model_b):
    scheme_a.generator = torch.Generator().manual_seed(11)
    scheme_b.generator = torch.Generator().manual_seed(11)
    return _gain_ratios(scheme_a(model_a), scheme_b(model_b))


@pytest.mark.parametrize("slope, model_has_leaky_module", [(0.2, True), (0.01, False)])
def test_kaiming_gain_leaky_slope_exactly(slope, model_has_leaky_module):
    """leaky_relu's gain is sqrt(2 / (1 + slope^2)) with the model's own slope (0.01 when it has
    no nn.LeakyReLU): the std ratio to the ReLU gain is exact, not only within sampling error."""
    act = nn.LeakyReLU(slope) if model_has_leaky_module else nn.ReLU()
    ratios = _same_draws(KaimingGain(), KaimingGain("relu"), MLP("leaky_relu", act=act), fresh_model())
    expected = math.sqrt(2 / (1 + slope**2)) / math.sqrt(2)
    torch.testing.assert_close(ratios[0], torch.ones_like(ratios[0]))  # first layer: gain 1
    for r in ratios[1:]:
        torch.testing.assert_close(r, torch.full_like(r, expected), rtol=1e-6, atol=0)


def test_const_default_fill_is_the_tutorials():
    assert Const().fill == 0.005
    assert all(torch.equal(p, torch.full_like(p, 0.005)) for p in Const()(fresh_model()).parameters())


def test_repr_names_the_arguments_not_the_generator():
    g = torch.Generator()
    assert repr(Normal(std=0.1, generator=g)) == "Normal(std=0.1)"
    assert repr(Const(fill=0.5)) == "Const(fill=0.5)"
    assert repr(Kaiming(generator=g)) == "Kaiming()"
    assert repr(KaimingGain("tanh")) == "KaimingGain(nonlinearity='tanh')"


def test_repr_of_a_scheme_with_several_arguments():
    class TwoArgs(InitScheme):  # the base class's repr, for any future scheme
        def __init__(self, a, b, generator=None):
            super().__init__(generator)
            self.a, self.b = a, b

    assert repr(TwoArgs(1, "x", generator=torch.Generator())) == "TwoArgs(a=1, b='x')"
