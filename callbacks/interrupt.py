"""SIGTERM (schedulers, preemption) and Ctrl-C stop a run at the next batch boundary, with
last.ckpt saved there, so `results.json` can say `interrupted` and how to resume.

Lightning's own SIGTERM path exits 0 (SIGTERMException is a SystemExit) and its Ctrl-C path
can stop mid-step; this callback replaces both with one graceful path. A second Ctrl-C stops at
once (no checkpoint: a step may be half done; the last one stands). SLURM's requeue signal
(SIGUSR1) stays Lightning's.

Under DDP the ranks must stop at the same step: a rank that stopped on its own signal waited in
its checkpoint's barrier for a rank that trained on, and the run hung. Rank 0 decides: after
each training batch (and at the fit's end) its signal, if any, is broadcast over a gloo group
(the host: no GPU sync), and every rank stops there. The validation runs to its end. Lightning's
own SIGTERM handling is kept out of it: its notifier broadcasts from inside the signal handler,
out of step with the other ranks' collectives, and its flag makes single ranks stop.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException

from src.errors import Interrupted

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class GracefulInterrupt(pl.Callback):
    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)
        self.received: int | None = None
        self._ranks, self._group = False, None
        self._previous: dict[int, object] = {}
        self._saved_step = -1
        self._fit_ended = False

    def _handler(self, signum, frame):
        if self.received == signal.SIGINT and signum == signal.SIGINT:
            # The second Ctrl-C: stop now. Not KeyboardInterrupt: Lightning would answer that
            # with sys.exit(1) and no results.json.
            raise Interrupted(signum, at_once=True)
        self.received = signum
        previous = self._previous.get(signum)
        if signum == signal.SIGTERM and callable(previous) and not self._ranks:
            previous(signum, frame)  # src/cli.py's StopSignals: it notes the signal

    def on_fit_start(self, trainer, pl_module):
        self.received, self._fit_ended = None, False
        self._ranks = getattr(trainer, "world_size", 1) > 1  # DDP: rank 0 decides when every rank stops
        if self._ranks:
            import torch.distributed

            self._group = torch.distributed.new_group(backend="gloo")
        for signum in SIGNALS:
            previous = signal.getsignal(signum)
            if previous is not signal.SIG_IGN:  # a background job's Ctrl-C stays ignored
                self._previous[signum] = previous
                signal.signal(signum, self._handler)

    def setup(self, trainer, pl_module, stage):
        # Under DDP Lightning's SIGTERM notifier forwards the signal to the other ranks and
        # broadcasts from inside the handler, out of step with the collectives they are in: a
        # SIGTERM in a sanity check hung (rank 0 in a metric's barrier, rank 1 in the notifier's
        # broadcast). Lightning sets its handler up after this hook, around the one it finds;
        # with the notifier silenced it only calls that one, ours in the fit: rank 0 decides.
        connector = getattr(trainer, "_signal_connector", None)
        if getattr(trainer, "world_size", 1) > 1 and hasattr(connector, "_sigterm_notifier_fn"):
            connector._sigterm_notifier_fn = _no_notice

    def on_test_start(self, trainer, pl_module):
        # The test pass after the fit is a run of its own, with Lightning's handler set up again
        # around src/cli.py's, which only notes a signal when it is not in front (its notifier,
        # before it was silenced, broadcast to a rank that had stopped: `failed`, 1 try in 5).
        # Under DDP src/cli.py's goes back in front and stops every rank it reaches at once.
        original = getattr(getattr(trainer, "_signal_connector", None), "_original_handlers", None)
        if getattr(trainer, "world_size", 1) > 1 and isinstance(original, dict) and callable(
                original.get(signal.SIGTERM)):
            signal.signal(signal.SIGTERM, original[signal.SIGTERM])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        # Not after an epoch's last batch: a checkpoint there, before the epoch's validation,
        # resumes past the validation (Lightning skips it). The stop comes in the validation
        # (no checkpoint: the one before resumes) or at the fit's end.
        received = self._rank0_received() if self._ranks else self.received
        if received is not None and batch_idx + 1 != trainer.num_training_batches:
            raise Interrupted(received)

    # A signal after an epoch's last batch stops in its validation, or after the last epoch at the
    # fit's end (on_fit_end): the next batch boundary may never come (a Ctrl-C in the last
    # validation was swallowed; the run tested and ended `ok`, exit 0). No checkpoint is written
    # in a validation: the last one, from before this epoch, resumes to the same result.
    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        # Under DDP the validation runs to its end (its metrics sync the ranks); the stop comes at
        # the next step or at the fit's end
        if self.received is not None and not self._ranks:
            raise Interrupted(self.received)

    def on_exception(self, trainer, pl_module, exception):
        # Ours comes at a batch boundary; Lightning's own SIGTERMException (its notifier also
        # runs) can come during validation, where no new checkpoint is written: the last one,
        # from before the epoch's validation, resumes to the same result.
        stopped = isinstance(exception, SIGTERMException) or (
            isinstance(exception, Interrupted) and not exception.at_once)
        batch_boundary = trainer.state.stage == "train" and not self._fit_ended
        if stopped and batch_boundary and trainer.global_step != self._saved_step:
            # Weights, optimizer and loop state agree here, so a resume continues exactly from
            # this step (mid-epoch included).
            # weights_only=False said out loud: a full checkpoint, without Lightning's INFO line
            # about the default in the middle of the terminal.
            trainer.save_checkpoint(self.dirpath / "last.ckpt", weights_only=False)
            self._saved_step = trainer.global_step
        # After this hook Lightning's teardown re-installs the handlers it found when it set up
        # its own, after on_fit_start: ours. Left there, they would swallow every later Ctrl-C
        # and SIGTERM of the process (a sweep's next jobs, its report). Hand it the ones we
        # replaced instead (no such dict in some Lightning version: restored here only).
        saved = getattr(getattr(trainer, "_signal_connector", None), "_original_handlers", None)
        if isinstance(saved, dict):
            saved.update({s: h for s, h in self._previous.items() if s in saved and h is not None})
        self._restore()

    def on_fit_end(self, trainer, pl_module):
        self._restore()
        # under DDP rank 0's signal, on every rank: all of them test, or none
        received = self._rank0_received() if self._ranks else self.received
        if received is not None:  # after the last epoch: the test is not run
            self._fit_ended = True
            raise Interrupted(received)

    def _rank0_received(self) -> int | None:
        import torch

        flag = torch.tensor([self.received or 0])
        torch.distributed.broadcast(flag, src=0, group=self._group)
        return int(flag.item()) or None

    def _restore(self):
        for signum, handler in self._previous.items():
            if handler is not None:
                signal.signal(signum, handler)
        self._previous = {}


def _no_notice(signum, frame) -> None:
    """Lightning's SIGTERM notifier, silenced under DDP (GracefulInterrupt.setup)."""

