import pytest
import torch
from torch import nn

from src.errors import ConfigError
from src.model import ACT_FNS, BaseNetwork


def test_tutorial_shapes():
    net = BaseNetwork()
    linears = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    assert [n for n, _ in linears] == ["layers.0", "layers.2", "layers.4", "layers.6", "layers.8"]
    assert [(m.in_features, m.out_features) for _, m in linears] == [
        (784, 512), (512, 256), (256, 256), (256, 128), (128, 10)]
    assert net(torch.zeros(7, 1, 28, 28)).shape == (7, 10)


@pytest.mark.parametrize("act", list(ACT_FNS))
def test_act_fns(act):
    net = BaseNetwork(act_fn=act, hidden_sizes=[16, 8])
    assert isinstance(net.layers[1], ACT_FNS[act])
    assert net.act_fn_name == act and net.config["act_fn"] == act
    assert net(torch.randn(3, 784)).shape == (3, 10)


def test_any_hidden_sizes():
    net = BaseNetwork(hidden_sizes=[5])
    assert len(net.layers) == 3 and net(torch.randn(2, 784)).shape == (2, 10)


@pytest.mark.parametrize("kw", [{"act_fn": "swish"}, {"hidden_sizes": []}, {"hidden_sizes": [4, 0]}])
def test_bad_model_config(kw):
    with pytest.raises(ConfigError):
        BaseNetwork(**kw)


@pytest.mark.parametrize("sizes, shown", [
    ("abc", "'abc'"),  # was read letter by letter: "invalid literal for int() with base 10: 'a'"
    ([64, 1.5], "[64, 1.5]"),  # was trained as [64, 1]
    ([64, True], "[64, True]"),
    (64, "64"),
    ([], "[]"),
])
def test_hidden_sizes_must_be_a_list_of_positive_integers(sizes, shown):
    with pytest.raises(ConfigError) as e:
        BaseNetwork(hidden_sizes=sizes)
    assert str(e.value) == f"model.hidden_sizes={shown} must be a non-empty list of positive integers"


def test_hidden_sizes_from_a_config_list_or_a_tuple():
    from omegaconf import OmegaConf

    assert BaseNetwork(hidden_sizes=OmegaConf.create([8, 4])).config["hidden_sizes"] == [8, 4]
    assert BaseNetwork(hidden_sizes=(8,)).config["hidden_sizes"] == [8]
