"""Variance diagnostics while the weights move: the values read back from the TensorBoard event
files against a float64 numpy replay of the same gradient descent, on the default 200-step
schedule and on every step.

A tiny tanh network trains with plain SGD on one fixed batch (every training step sees the
same 8 samples, which are also the diagnostic batch), so the weights after k steps are known
exactly: W_{k+1} = W_k - lr * dL/dW(W_k). Step k of `weights/*` is W_k (after k updates), of
`gradients/*` the gradient at W_k (before update k+1), of `activations/*` the outputs at W_k.
"""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader, TensorDataset

from callbacks.diagnostics import ActivationStats, GradientStats, WeightStats
from src.model import BaseNetwork
from src.module import ClassifierModule

N, D_IN, HIDDEN, CLASSES = 8, 4, 5, 3
LR = 0.3


def known():
    x = ((np.arange(N * D_IN).reshape(N, D_IN) % 7) - 3.0) / 2.0
    y = np.arange(N) % CLASSES
    w1 = ((np.arange(HIDDEN * D_IN).reshape(HIDDEN, D_IN) * 3 % 11) - 5.0) / 10.0
    b1 = np.linspace(-0.2, 0.2, HIDDEN)
    w2 = ((np.arange(CLASSES * HIDDEN).reshape(CLASSES, HIDDEN) * 5 % 13) - 6.0) / 10.0
    b2 = np.array([0.1, -0.1, 0.0])
    return x, y, [w1, b1, w2, b2]


def replay(steps: int) -> list[dict]:
    """Per step k = 0..steps: activations, weight gradients and weights at W_k, float64."""
    x, y, (w1, b1, w2, b2) = known()
    onehot = np.eye(CLASSES)[y]
    out = []
    for _ in range(steps + 1):
        z1 = x @ w1.T + b1
        h = np.tanh(z1)
        logits = h @ w2.T + b2
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        dlogits = (p - onehot) / N
        g_w2, g_b2 = dlogits.T @ h, dlogits.sum(0)
        dz1 = (dlogits @ w2) * (1 - h**2)
        g_w1, g_b1 = dz1.T @ x, dz1.sum(0)
        out.append({"activations": {"layers.0": z1, "layers.2": logits},
                    "gradients": {"layers.0": g_w1, "layers.2": g_w2},
                    "weights": {"layers.0": w1, "layers.2": w2}})
        w1, b1, w2, b2 = w1 - LR * g_w1, b1 - LR * g_b1, w2 - LR * g_w2, b2 - LR * g_b2
    return out


class OneBatchData(pl.LightningDataModule):
    def __init__(self, steps: int):
        super().__init__()
        x, y, _ = known()
        self.x, self.y, self.steps = torch.tensor(x, dtype=torch.float32), torch.tensor(y), steps

    def train_dataloader(self):
        # the same full batch `steps` times: one epoch, `steps` optimizer steps
        return DataLoader(TensorDataset(self.x.repeat(self.steps, 1), self.y.repeat(self.steps)),
                          batch_size=N, shuffle=False)

    def diagnostic_batch(self, n):
        return self.x[:n], self.y[:n]


def train_tiny(tmp_path, every_n_steps: int, steps: int) -> EventAccumulator:
    network = BaseNetwork(act_fn="tanh", input_size=D_IN, num_classes=CLASSES, hidden_sizes=[HIDDEN])
    module = ClassifierModule(network, optimizer=torch.optim.SGD(network.parameters(), lr=LR))
    _, _, (w1, b1, w2, b2) = known()
    with torch.no_grad():
        for layer, w, b in ((module.net.layers[0], w1, b1), (module.net.layers[2], w2, b2)):
            layer.weight.copy_(torch.tensor(w))
            layer.bias.copy_(torch.tensor(b))
    callbacks = [ActivationStats(every_n_steps=every_n_steps, batch_size=N, histograms=False),
                 GradientStats(every_n_steps=every_n_steps, histograms=False),
                 WeightStats(every_n_steps=every_n_steps, histograms=False)]
    trainer = pl.Trainer(max_steps=steps, max_epochs=1, accelerator="cpu", callbacks=callbacks,
                         logger=TensorBoardLogger(str(tmp_path), name="tb", version=""),
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, log_every_n_steps=50)
    trainer.fit(module, datamodule=OneBatchData(steps))
    assert trainer.global_step == steps
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    return acc


STATS = {"activations": ("var", "mean"), "gradients": ("var", "norm"), "weights": ("var", "norm")}


def expected_stat(values: np.ndarray, stat: str) -> float:
    return {"var": np.var(values), "mean": np.mean(values), "norm": np.linalg.norm(values)}[stat]


@pytest.mark.parametrize("every_n_steps, steps, logged", [
    # the default schedule: start, every 200 steps, end (gradients: no "end", there is no step 450)
    (200, 450, {"activations": [0, 200, 400, 450], "gradients": [0, 200, 400], "weights": [0, 200, 400, 450]}),
    (1, 4, {"activations": [0, 1, 2, 3, 4], "gradients": [0, 1, 2, 3], "weights": [0, 1, 2, 3, 4]}),
])
def test_logged_statistics_follow_the_weights_as_they_move(tmp_path, every_n_steps, steps, logged):
    acc = train_tiny(tmp_path, every_n_steps, steps)
    truth = replay(steps)
    # the weights really moved between the first and the last logged step
    first, last = truth[0]["weights"]["layers.0"], truth[steps]["weights"]["layers.0"]
    assert np.abs(first - last).max() > 0.1
    for kind, stats in STATS.items():
        for layer in ("layers.0", "layers.2"):
            for stat in stats:
                events = acc.Scalars(f"{kind}/{stat}/{layer}")
                assert [e.step for e in events] == logged[kind], (kind, stat, layer)
                for e in events:
                    want = expected_stat(truth[e.step][kind][layer], stat)
                    assert e.value == pytest.approx(want, rel=2e-4, abs=1e-7), (kind, stat, layer, e.step)
