"""probe.py: the tutorial's variance tables on the real diagnostic batch, probe.json, multirun summary."""

import csv
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from src.config import compose_config
from src.probe import probe

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"

warnings.filterwarnings("ignore", message=".*LeafSpec.*")

pytestmark = pytest.mark.skipif(not (DATA / "FashionMNIST" / "raw").is_dir(),
                                reason="FashionMNIST raw files not prepared (make data)")

# The tutorial's printed activation variances for const_init(fill=0.005), identity network.
TUTORIAL_CONST = {"layers.0": 2.0582761764526367, "layers.2": 13.489120483398438,
                  "layers.4": 22.100574493408203, "layers.6": 36.20957946777344,
                  "layers.8": 14.831440925598145}


def compose_cfg(name, out, overrides):
    return compose_config([f"paths.data_dir={DATA}", *overrides], out, config_name=name)


def test_const_init_reproduces_the_tutorial_to_3_significant_digits(tmp_path):
    cfg = compose_cfg("probe", tmp_path, ["init=const", "init.fill=0.005", "model.act_fn=identity",
                                          "tensorboard=false"])
    result = probe(cfg)
    saved = json.loads((tmp_path / "probe.json").read_text())
    for layer, expected in TUTORIAL_CONST.items():
        assert float(f"{saved['activations'][layer]:.3g}") == float(f"{expected:.3g}"), layer
        assert saved["activations"][layer] == pytest.approx(expected, rel=1e-4)
    assert saved["activations"] == result["activations"]
    # Constant weights: zero variance; the hidden layers' weight gradients are all equal too.
    assert all(v == 0.0 for v in saved["weights"].values())
    assert saved["gradients"]["layers.8"] > 1e-3
    assert all(saved["gradients"][k] < 1e-15 for k in ("layers.2", "layers.4", "layers.6"))
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == [
        "activations_step000000.png", "gradients_step000000.png", "weights_step000000.png"]


def test_probe_json_has_one_entry_per_linear_layer_for_any_hidden_sizes(tmp_path):
    cfg = compose_cfg("probe", tmp_path, ["init=xavier", "model.act_fn=tanh", "model.hidden_sizes=[32,16,8]"])
    probe(cfg)
    saved = json.loads((tmp_path / "probe.json").read_text())
    layers = ["layers.0", "layers.2", "layers.4", "layers.6"]
    for kind in ("activations", "gradients", "weights"):
        assert list(saved[kind]) == layers
        assert all(v > 0 for v in saved[kind].values())
    assert saved["meta"]["shapes"] == {"layers.0": [784, 32], "layers.2": [32, 16], "layers.4": [16, 8],
                                       "layers.6": [8, 10]}
    assert saved["meta"]["batch_size"] == 1024
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_probe_equals_step_0_of_training(tmp_path):
    """Same seed, same order of draws: the probe's numbers are the training run's init."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from src.training import train

    common = ["init=normal", "init.std=0.1", "model.act_fn=relu", "model.hidden_sizes=[64,32]"]
    train_cfg = compose_cfg("train", tmp_path / "train", common + [
        "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu",
        "callbacks.distribution_figures=null"])
    train(train_cfg)
    probed = probe(compose_cfg("probe", tmp_path / "probe", common + ["tensorboard=false"]))
    acc = EventAccumulator(str(tmp_path / "train" / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    for layer, var in probed["activations"].items():
        step0 = [e.value for e in acc.Scalars(f"activations/var/{layer}") if e.step == 0]
        assert step0 == [pytest.approx(var, rel=1e-5)], layer
    for layer, var in probed["weights"].items():
        assert acc.Scalars(f"weights/var/{layer}")[0].value == pytest.approx(var, rel=1e-5)


def test_multirun_writes_one_combined_table(tmp_path):
    sweep = tmp_path / "sweep"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "probe.py"), "-m", "init=const,equal_var", "model.act_fn=identity",
         "model.hidden_sizes=[16]", "tensorboard=false", f"paths.data_dir={DATA}", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader((sweep / "probe_summary.csv").open()))
    assert [(r["init"], r["layer"]) for r in rows] == [("const", "layers.0"), ("const", "layers.2"),
                                                       ("equal_var", "layers.0"), ("equal_var", "layers.2")]
    assert all(float(r["activation_var"]) > 0 for r in rows)
    md = (sweep / "probe_summary.md").read_text()
    assert "## Activation variance" in md and "| equal_var | identity |" in md
    assert "Activation variance" in proc.stdout
