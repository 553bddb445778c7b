"""The loss landscape of a trained run, with its own optimizer's path on it (Li et al. 2018).

    python landscape.py run=logs/train/runs/<time>                         # one run
    python landscape.py runs=logs/compare_optimizers/multiruns/<time>      # SGD vs Adam, side by side
    python landscape.py run=<dir> directions=random landscape.resolution=51 landscape.subset=full
    python landscape.py -m run=<dir>,<dir>                                 # one landscape each

Record the path at training time with `python train.py callbacks=with_path`. Everything lives in
src/landscape.py (docs/landscape.md); this file wires Hydra to `landscape(cfg)`.
"""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from src.cli import run_app, run_task  # noqa: E402


@hydra.main(config_path="conf", config_name="landscape", version_base="1.3")
def main(cfg: DictConfig):
    def task(cfg):
        # imported here: torch takes seconds to import, and a mistyped option should fail before
        # that; inside the task, a stop during the import leaves results.json `interrupted`
        import matplotlib

        matplotlib.use("Agg")  # headless: figures go to files and TensorBoard
        from src.landscape import landscape, summary_lines

        record = landscape(cfg)
        print("\n".join(summary_lines(record, Path(cfg.paths.output_dir))), flush=True)
        return record

    run_task(task, cfg)


# Given a sweep job's dir (`0_optim=sgd,trainer.max_epochs=3`), whole: src/cli.py quote_path_values
PATH_KEYS = ("run", "runs", "checkpoint")


if __name__ == "__main__":
    run_app(main, path_keys=PATH_KEYS)
