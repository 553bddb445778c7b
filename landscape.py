"""The loss landscape of a trained run, with its own optimizer's path on it (Li et al. 2018).

    python landscape.py run=logs/train/runs/<time>                         # one run
    python landscape.py runs=logs/compare_optimizers/multiruns/<time>      # SGD vs Adam, side by side
    python landscape.py run=<dir> directions=random landscape.resolution=51 landscape.subset=full

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
    import matplotlib

    matplotlib.use("Agg")  # headless: figures go to files and TensorBoard

    # imported here: torch takes seconds to import, a mistyped option should fail before that
    from src.landscape import landscape, summary_lines

    def task(cfg):
        record = landscape(cfg)
        print("\n".join(summary_lines(record, Path(cfg.paths.output_dir))), flush=True)
        return record

    run_task(task, cfg)


def quote_path_values(argv: list[str]) -> list[str]:
    """Sweep job dirs are named by their overrides (`0_optim=sgd,trainer.max_epochs=3`), which
    Hydra's override grammar would split at `=` and `,`: quote the value of `run=`, `runs=` (unless
    a list) and `checkpoint=` for it."""
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key in ("run", "runs", "checkpoint") and value and value[0] not in "'\"[" \
                and any(ch in value for ch in "=,()[]{} "):
            quote = "'" if "'" not in value else '"'
            arg = f"{key}={quote}{value}{quote}"
        out.append(arg)
    return out


if __name__ == "__main__":
    import sys

    sys.argv = quote_path_values(sys.argv)
    run_app(main)
