"""DDP on 2 CPU processes (trainer=ddp_sim, gloo), checked from inside the ranks.

A recording callback saves, on each rank, the batches it trained on in the epoch, the weights
at the start and the gradient of the first step as the optimizer sees it. Then, here, with
plain torch on data decoded by torchvision:
  * the ranks' batches are disjoint and together are the epoch (the training split) less its
    last batch, so that both ranks take the same number of steps;
  * the gradient each rank steps with is the gradient of the mean loss over both ranks'
    batches concatenated (DDP averages), not its own batch's;
  * val_scores and test_acc are the accuracies of the trained weights on the first images of
    the val split and the test set (both ranks' shares together).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from tests.conftest import run_script
from tests.test_truth_training import accuracy, plain_mlp, torchvision_split

# 9 batches: an odd count, which hung (rank 0 in its 5th step's all-reduce, rank 1 at the epoch's
# end); the last batch of the epoch is dropped so that each rank takes 4
SUBSET, BATCH, EVAL_BATCH, EVAL_BATCHES, WORLD = 2304, 256, 512, 2, 2


class RecordRank(pl.Callback):
    """Saves <out_dir>/rank<r>.pt: the epoch's batches, the initial weights, the first step's grads."""

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)
        self.batches: list = []
        self.record: dict = {}

    def on_train_start(self, trainer, pl_module):
        self.record["init"] = {k: v.detach().clone() for k, v in pl_module.net.state_dict().items()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == 0:
            self.batches.append((batch[0].detach().clone(), batch[1].detach().clone()))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_step == 0:
            self.record["grads"] = {n: p.grad.detach().clone() for n, p in pl_module.net.named_parameters()}

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 0:
            self.record["batches"] = self.batches
            self.out_dir.mkdir(parents=True, exist_ok=True)
            torch.save(self.record, self.out_dir / f"rank{trainer.global_rank}.pt")


def pixels(x: torch.Tensor) -> list[bytes]:
    """Each normalised image back to its exact uint8 pixels (a fingerprint for matching)."""
    from src.data import MEAN, STD

    u8 = ((x * STD + MEAN) * 255).round().clamp(0, 255).to(torch.uint8)
    return [img.numpy().tobytes() for img in u8]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("ddp")
    record = out / "ranks"
    res = run_script("train.py", "trainer=ddp_sim", "optim=sgd_mom", "trainer.max_epochs=1",
                     f"data.train_subset={SUBSET}", f"data.batch_size={BATCH}",
                     f"data.eval_batch_size={EVAL_BATCH}", f"trainer.limit_val_batches={EVAL_BATCHES}",
                     f"trainer.limit_test_batches={EVAL_BATCHES}", "callbacks=none", "print_config=false",
                     "+callbacks.record._target_=tests.test_ddp.RecordRank", f"+callbacks.record.out_dir={record}",
                     f"hydra.run.dir={out / 'run'}", timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    ranks = [torch.load(record / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    results = json.loads((out / "run" / "results.json").read_text())
    return ranks, results


def expected_epoch(data_dir) -> tuple[torch.Tensor, torch.Tensor]:
    """The first SUBSET images of the tutorial's training split (torch's random_split, seed 42)."""
    from torchvision.datasets import FashionMNIST

    ds = FashionMNIST(str(data_dir), train=True, download=False)
    state = torch.get_rng_state()
    torch.manual_seed(42)
    train, _ = torch.utils.data.random_split(range(60000), [50000, 10000])
    torch.set_rng_state(state)
    idx = list(train.indices)[:SUBSET]
    return ds.data[idx], ds.targets[idx]


def test_ranks_see_disjoint_batches_whose_union_is_the_epoch(ddp_run, data_dir):
    ranks, results = ddp_run
    assert results["status"] == "ok" and results["config"]["trainer"]["devices"] == WORLD
    per_rank = []
    for rank in ranks:
        assert len(rank["batches"]) == SUBSET // BATCH // WORLD == 4
        assert all(x.shape[0] == BATCH for x, _ in rank["batches"])
        per_rank.append(Counter((p, int(y)) for x, ys in rank["batches"] for p, y in zip(pixels(x), ys, strict=True)))
    images, labels = expected_epoch(data_dir)
    epoch = Counter((img.numpy().tobytes(), int(y)) for img, y in zip(images, labels, strict=True))
    assert not set(per_rank[0]) & set(per_rank[1])  # no sample on both ranks
    both = per_rank[0] + per_rank[1]  # together: the epoch, less one batch of it, each sample once
    assert both <= epoch and (epoch - both).total() == BATCH and max(both.values()) == 1


def test_each_rank_steps_with_the_gradient_of_both_batches(ddp_run):
    ranks, _ = ddp_run
    init = ranks[0]["init"]
    for k, v in ranks[1]["init"].items():
        assert torch.equal(v, init[k]), k  # both ranks start from the same weights
    x = torch.cat([r["batches"][0][0] for r in ranks])
    y = torch.cat([r["batches"][0][1] for r in ranks])

    def grads_of(xb, yb) -> dict:
        model = plain_mlp(init).train()
        F.cross_entropy(model(xb), yb).backward()
        linears = [m for m in model if isinstance(m, torch.nn.Linear)]
        out = {}
        for j, lin in enumerate(linears):
            out[f"layers.{2 * j}.weight"], out[f"layers.{2 * j}.bias"] = lin.weight.grad, lin.bias.grad
        return out

    both, own = grads_of(x, y), grads_of(ranks[0]["batches"][0][0], ranks[0]["batches"][0][1])
    for rank in ranks:
        for name, g in rank["grads"].items():
            torch.testing.assert_close(g, both[name], rtol=1e-4, atol=1e-6, msg=name)
    # and that is not what rank 0 would have stepped with alone
    assert max((own[n] - both[n]).abs().max().item() for n in both) > 1e-3


def test_accuracies_are_those_of_the_trained_weights_on_both_ranks_shares(ddp_run, data_dir):
    _, results = ddp_run
    ckpt = torch.load(results["best_checkpoint"], map_location="cpu", weights_only=True)
    net = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    n = EVAL_BATCH * EVAL_BATCHES * WORLD  # each rank evaluates EVAL_BATCHES batches
    val_acc = accuracy(net, *torchvision_split(data_dir, True, n))
    test_acc = accuracy(net, *torchvision_split(data_dir, False, n))
    assert results["val_scores"] == pytest.approx([val_acc], abs=1e-6)
    assert results["test_acc"] == pytest.approx(test_acc, abs=1e-6)


class SignalFromRank0(pl.Callback):
    """Test helper: rank 0 sends `signum` before step `at_step` (unless the run was resumed) to the
    process group, both ranks (`group`), or to itself alone (`kill <pid>`)."""

    def __init__(self, at_step: int, signum: int, group: bool):
        self.at_step, self.signum, self.group = at_step, signum, group

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        import os

        if trainer.global_rank == 0 and trainer.global_step == self.at_step and trainer.ckpt_path is None:
            if self.group:
                os.killpg(os.getpgrp(), self.signum)
            else:
                os.kill(os.getpid(), self.signum)


def _ddp_train(*args: str, timeout: int = 150):
    """train.py trainer=ddp_sim in a session of its own (the signal to its group must not reach
    pytest); a hang is killed with the whole group, both ranks, and fails the test."""
    import os
    import signal
    import subprocess

    from tests.conftest import PYTHON, ROOT

    proc = subprocess.Popen([PYTHON, str(ROOT / "train.py"), "trainer=ddp_sim", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            env={**os.environ, "PROJECT_ROOT": str(ROOT)})
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"hung; stderr: {err[-3000:]}")
    return proc.returncode, err


SIGNAL_RUN = [f"data.train_subset={SUBSET}", f"data.batch_size={BATCH}", f"data.eval_batch_size={EVAL_BATCH}",
              f"trainer.limit_val_batches={EVAL_BATCHES}", f"trainer.limit_test_batches={EVAL_BATCHES}",
              "callbacks=none", "print_config=false", "trainer.max_epochs=2"]


@pytest.mark.parametrize(("signum", "group"), [(15, True), pytest.param(2, True, marks=pytest.mark.slow), (15, False)])
def test_a_signal_stops_both_ranks_at_one_step_with_a_checkpoint(tmp_path, data_dir, signum, group):
    """SIGTERM to a DDP run hung: each rank stopped at its own batch (or only rank 0, which got
    it), and the first one to save waited in the checkpoint's barrier for one that trained on;
    Lightning's SIGTERM notifier also broadcast from inside the signal handler. Rank 0's signal
    is now broadcast after each batch, and every rank stops there (callbacks/interrupt.py). Rank 0
    alone writes results.json and says how the run ended: rank 1's view overwrote it."""
    import signal

    run = tmp_path / "run"
    rc, err = _ddp_train(*SIGNAL_RUN, f"hydra.run.dir={run}", "+callbacks.sig._target_=tests.test_ddp.SignalFromRank0",
                         "+callbacks.sig.at_step=2", f"+callbacks.sig.signum={signum}", f"+callbacks.sig.group={group}")
    name = signal.Signals(signum).name
    assert rc == 128 + signum, err[-3000:]
    assert [ln for ln in err.splitlines() if ln.startswith("error: ")] == [
        f"error: interrupted by {name}; resume with: python train.py ckpt_path={run}"]
    r = json.loads((run / "results.json").read_text())
    assert (r["status"], r["signal"]) == ("interrupted", name)
    assert r["global_step"] == 3  # step 2's batch ends where the signal was noted: the stop
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3


class SignalFromRank0InEvaluation(pl.Callback):
    """Test helper: rank 0 sends `signum` at the first batch of the sanity check (`where`:
    sanity) or of the test pass (test), to the process group (`group`) or to itself alone. First
    it writes down the handlers that SIGTERM's handler will call (sigterm_handlers.txt)."""

    def __init__(self, where: str, signum: int, group: bool):
        self.where, self.signum, self.group = where, signum, group

    def _send(self, trainer) -> None:
        import os
        import signal

        handler = signal.getsignal(signal.SIGTERM)
        names = [getattr(h, "__name__", type(h).__name__) for h in getattr(handler, "signal_handlers", [handler])]
        Path(trainer.default_root_dir, "sigterm_handlers.txt").write_text(" ".join(names))
        if self.group:
            os.killpg(os.getpgrp(), self.signum)
        else:
            os.kill(os.getpid(), self.signum)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self.where == "sanity" and trainer.sanity_checking and trainer.global_rank == 0 and batch_idx == 0:
            self._send(trainer)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self.where == "test" and trainer.global_rank == 0 and batch_idx == 0:
            self._send(trainer)


@pytest.mark.parametrize(("where", "group"), [("test", True), ("sanity", True),
                                              pytest.param("test", False, marks=pytest.mark.slow)])
def test_a_sigterm_in_an_evaluation_ends_both_ranks_interrupted(tmp_path, data_dir, where, group):
    """Lightning's SIGTERM handler, set up at each fit and test, forwarded the signal and
    broadcast from inside the handler, out of step with the other rank: in a sanity check the
    run hung (rank 0 in a metric's barrier, rank 1 in that broadcast), in the test pass it
    ended `failed` with a gloo error 1 try in 5. Now the sanity check's signal stops the run at
    the first step, with a checkpoint, as any signal in the fit does; the test pass is cut off at
    once on every rank, and the fit's checkpoints stay for a resume (which tests them)."""
    run = tmp_path / "run"
    rc, err = _ddp_train(*SIGNAL_RUN, "trainer.max_epochs=1", "trainer.num_sanity_val_steps=1", f"hydra.run.dir={run}",
                         "+callbacks.sig._target_=tests.test_ddp.SignalFromRank0InEvaluation",
                         f"+callbacks.sig.where={where}", "+callbacks.sig.signum=15", f"+callbacks.sig.group={group}")
    assert rc == 143, err[-3000:]
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert errors == [f"error: interrupted by SIGTERM; resume with: python train.py ckpt_path={run}"], err[-3000:]
    r = json.loads((run / "results.json").read_text())
    assert (r["status"], r["signal"]) == ("interrupted", "SIGTERM")
    assert r.get("test_acc") is None
    steps = 1 if where == "sanity" else 4  # the sanity check's stop: after the first step
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == r["global_step"] == steps
    # the races themselves are left to chance; the notifier that made them is not
    handlers = (run / "sigterm_handlers.txt").read_text().split()
    assert handlers == (["StopSignals"] if where == "test" else ["_no_notice", "_handler"])
