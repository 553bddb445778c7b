"""Train the tutorial's MLP on FashionMNIST: `python train.py optim=sgd_mom init=xavier`."""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from src.cli import print_start, run_app, run_task  # noqa: E402


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig):
    print_start(cfg)  # before torch is imported: the first output comes in about a second
    from src.training import train

    return run_task(train, cfg)


if __name__ == "__main__":
    run_app(main, resume=True)  # `ckpt_path=<run dir>` resumes in that run's dir
