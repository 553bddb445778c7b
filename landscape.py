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


def quote_path_values(argv: list[str]) -> list[str]:
    """Sweep job dirs are named by their overrides (`0_optim=sgd,trainer.max_epochs=3`), which
    Hydra's override grammar would split at `=` and `,`: quote the value of `run=`, `runs=` (unless
    a list) and `checkpoint=` for it. In a multirun (`-m`), a value made of several existing paths
    (`run=<dir>,<dir>`; `checkpoint=last,best`) is a sweep over them: each is quoted by itself."""
    multirun = any(a in ("-m", "--multirun") or a.lower() == "hydra.mode=multirun" for a in argv)
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key in ("run", "runs", "checkpoint") and value and value[0] not in "'\"[" \
                and any(ch in value for ch in "=,()[]{} "):
            parts = swept_paths(key, value) if multirun else None
            arg = f"{key}={','.join(_quoted(v) for v in parts or [value])}"
        out.append(arg)
    return out


def swept_paths(key: str, value: str) -> list[str] | None:
    """The paths a comma-separated value lists, when there are several and every piece is one:
    a job dir's name holds commas too, so the pieces are grouped into existing paths (None: it
    is one path, or not only paths, and stays whole)."""
    pieces = value.split(",")
    if len(pieces) < 2 or Path(value).expanduser().exists():
        return None

    def names_one(text: str) -> bool:
        return Path(text).expanduser().exists() or (key == "checkpoint" and text in ("last", "best"))

    # splits[i]: pieces[:i] as a list of paths, where there is one (the longest last path first)
    splits: dict[int, list[str]] = {0: []}
    for end in range(1, len(pieces) + 1):
        for start in range(end):
            if start in splits and names_one(text := ",".join(pieces[start:end])):
                splits[end] = [*splits[start], text]
                break
    found = splits.get(len(pieces))
    return found if found is not None and len(found) > 1 else None


def _quoted(value: str) -> str:
    if any(ch in value for ch in "=,()[]{} "):
        quote = "'" if "'" not in value else '"'
        return f"{quote}{value}{quote}"
    return value


if __name__ == "__main__":
    import sys

    sys.argv = quote_path_values(sys.argv)
    run_app(main)
