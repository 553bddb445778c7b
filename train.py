"""Train the tutorial's MLP on FashionMNIST: `python train.py optim=sgd_mom init=xavier`."""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import warnings  # noqa: E402

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

import src.resolvers  # noqa: E402,F401  (registers ${lr_around:...} before Hydra composes)
from src.entry import run_task  # noqa: E402

# Lightning 2.6 on torch 2.14 warns about its own use of a deprecated pytree API on every run.
warnings.filterwarnings("ignore", message=".*LeafSpec.*")


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig):
    # Imported here: torch and Lightning take seconds to import, and a mistyped option or
    # key should fail before that (prepare_argv, Hydra's composition).
    from src.training import train

    return run_task(train, cfg)


if __name__ == "__main__":
    import sys

    from src.entry import prepare_argv

    # One-line errors for an unknown `group=option`; `ckpt_path=` resumes in that run's dir.
    sys.argv = prepare_argv(sys.argv, Path(__file__).resolve().parent / "conf")
    main()
