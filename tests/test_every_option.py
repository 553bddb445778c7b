"""Every optimizer config and every init config trains (one short epoch each)."""

import json

import pytest

from src.training import train
from tests.conftest import FAST, ROOT, compose

OPTIMS = sorted(p.stem for p in (ROOT / "conf" / "optim").glob("*.yaml"))
INITS = sorted(p.stem for p in (ROOT / "conf" / "init").glob("*.yaml"))
SHORT = [*FAST, "trainer.limit_train_batches=20", "data.eval_batch_size=1000"]


def test_all_options_are_covered():
    assert set(OPTIMS) == {"sgd", "sgd_mom", "adam", "torch_sgd", "torch_sgd_mom", "torch_adam"}
    assert {"const", "normal", "equal_var", "xavier", "xavier_normal", "kaiming", "default"} <= set(INITS)


@pytest.mark.parametrize("option", [f"optim={o}" for o in OPTIMS] + [f"init={i}" for i in INITS])
def test_trains_one_short_epoch(option, tmp_path, data_dir):
    cfg = compose([*SHORT, option], tmp_path)
    train(cfg)
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["status"] == "ok", r.get("error")
    assert len(r["train_losses"]) == 20 and r["epochs"] == 1
    if option != "init=const":  # const is the tutorial's example of an init that cannot learn
        assert r["train_losses"][-1] < r["train_losses"][0]
