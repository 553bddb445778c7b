"""last.ckpt every N optimizer steps, beside the per-epoch best/last checkpoints."""

from __future__ import annotations

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

    @property
    def enabled(self) -> bool:
        """False at 0: then train() leaves it out, since Lightning would still call each of its
        hooks at every step (it finds checkpoints by type, so they cannot join CallbackGroup)."""
        return self._every_n_train_steps > 0
