"""Train the tutorial's MLP on FashionMNIST: `python train.py optim=sgd_mom init=xavier`."""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from src.cli import print_start, run_app, run_task  # noqa: E402


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig):
    return run_task(start_and_train, cfg)


def start_and_train(cfg: DictConfig):
    print_start(cfg)  # before torch is imported: the first output comes in about a second
    from src.training import train

    apply_thread_limit()
    return train(cfg)


def apply_thread_limit() -> None:
    """A sweep job's OMP_NUM_THREADS (an experiment preset's hydra.job.env_set, or joblib's
    worker limit), applied to torch: torch reads the variable only when it is first imported,
    which in a sequential sweep is once for all jobs (docs/performance.md)."""
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        import torch

        torch.set_num_threads(int(threads))


if __name__ == "__main__":
    run_app(main, resume=True)  # `ckpt_path=<run dir>` resumes in that run's dir
