"""The per-epoch best and last checkpoints, and last.ckpt every N optimizer steps."""

from __future__ import annotations

import warnings
from pathlib import Path

from pytorch_lightning.callbacks import ModelCheckpoint


class StepCheckpoint(ModelCheckpoint):
    """Writes only `last.ckpt`, every `every_n_train_steps` optimizer steps; 0 turns it off."""

    def __init__(self, dirpath: str, every_n_train_steps: int = 0):
        if isinstance(every_n_train_steps, bool) or not isinstance(every_n_train_steps, int) \
                or every_n_train_steps < 0:
            raise ValueError(f"checkpoint.every_n_train_steps={every_n_train_steps!r} must be an "
                             "integer >= 0 (0 = only the per-epoch checkpoints)")
        super().__init__(dirpath=dirpath, save_top_k=0, save_last=True, every_n_epochs=0,
                         every_n_train_steps=every_n_train_steps, enable_version_counter=False)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self._every_n_train_steps or trainer.global_step % self._every_n_train_steps:
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if batch_idx + 1 == trainer.num_training_batches:
            # The epoch's last batch: the epoch-end checkpoint comes right after its validation.
            # One written here, before the validation, resumes past it: Lightning skips that
            # epoch's validation (a run stopped in it ended with one val score fewer).
            return None
        # Under manual optimization (the module's own step) Lightning warns at each such save, in
        # 20 lines, that the checkpoint holds the weights after the step: that is what it is
        # meant to hold, as under Lightning's own loop.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    @property
    def enabled(self) -> bool:
        """False at 0: then train() leaves it out, since Lightning would still call each of its
        hooks at every step (it finds checkpoints by type, so they cannot join CallbackGroup)."""
        return self._every_n_train_steps > 0


class EpochCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, with `last.ckpt` written after every epoch again.

    Since Lightning 2.6, `save_last=True` writes last.ckpt at an epoch's end only when a top-k
    checkpoint was written at the same step: with `save_top_k=1`, only when val accuracy
    improved. last.ckpt was then a copy of the best epoch, and a run killed 8 epochs after its
    best resumed 8 epochs back. Here last.ckpt is written whenever the epoch's checkpointing
    wrote nothing at this step; where Lightning still writes it (older versions, an improving
    epoch) nothing more is written."""

    @property
    def state_key(self) -> str:
        # ModelCheckpoint's key: a checkpoint written before this class (or by Lightning's own
        # callback) restores its best score and path on resume.
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def load_state_dict(self, state_dict: dict) -> None:
        # A run dir moved or copied, or a resume into another hydra.run.dir: Lightning then keeps
        # only best_model_path, and forgets the best score. The resumed run's next epoch, however
        # bad, became the best, and test_acc was its (a resume with lr=1: test acc 10 %, beside
        # best val acc 81 %). Its paths are rebased to this dir instead, with the checkpoints
        # that live only in the old one copied here: top-k would otherwise delete a file of
        # another run, and a moved dir's old paths no longer exist.
        old = state_dict.get("dirpath")
        if old is not None and self.dirpath is not None and old != self.dirpath:
            state_dict = {**state_dict, "dirpath": self.dirpath, **self._rebased(state_dict)}
        super().load_state_dict(state_dict)

    def _rebased(self, state: dict) -> dict:
        import shutil

        from src.cli import rank_zero

        here = Path(self.dirpath)

        def rebase(path: str, copy: bool) -> str | None:
            if not path:
                return path
            new = here / Path(path).name
            if not new.is_file() and copy and Path(path).is_file():
                if rank_zero():  # one copy, not one per DDP rank
                    here.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, new)
                return str(new)
            return str(new) if new.is_file() else None

        best_k = {new: score for path, score in (state.get("best_k_models") or {}).items()
                  if (new := rebase(path, copy=True)) is not None}
        best = rebase(state.get("best_model_path") or "", copy=True)
        rebased = {"best_k_models": best_k, "best_model_path": best or "",
                   "kth_best_model_path": rebase(state.get("kth_best_model_path") or "", copy=True) or "",
                   "last_model_path": rebase(state.get("last_model_path") or "", copy=False) or ""}
        if best is None:  # its file is gone: nothing to compare the next epochs with
            rebased["best_model_score"] = None
        return rebased

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_not_saved(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_not_saved(trainer)

    def _save_last_if_not_saved(self, trainer) -> None:
        # skipped when this step is already saved, and in sanity checks and fast_dev_run
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
