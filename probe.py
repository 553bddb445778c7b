"""The tutorial's variance tables, no training: `python probe.py init=const init.fill=0.005 model.act_fn=identity`.

Sweeps: `python probe.py -m init=const,normal,equal_var,xavier,kaiming model.act_fn=identity,tanh,relu`
writes probe_summary.md/.csv in the sweep dir.
"""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import logging  # noqa: E402
import warnings  # noqa: E402

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from src.cli import run_app, run_task  # noqa: E402

warnings.filterwarnings("ignore", message=".*LeafSpec.*")
# Hydra imports torch before the job (conf/probe.yaml's ProbeSummary is in src.probe), where no
# run_task has quieted torch's loggers yet: a stop in the middle of that import left torch's
# exit-time FakeTensor statistics going to Hydra's console, three lines after the error line.
logging.getLogger("torch._subclasses.fake_tensor").setLevel(logging.WARNING)


@hydra.main(config_path="conf", config_name="probe", version_base="1.3")
def main(cfg: DictConfig):
    run_task(start_and_probe, cfg)


def start_and_probe(cfg: DictConfig):
    # torch and Lightning are imported here, not at the top: a SIGTERM or Ctrl-C during their
    # seconds-long import is then one `error:` line (run_app's and run_task's StopSignals), not
    # a silent death or a KeyboardInterrupt traceback, as in train.py
    from src.probe import probe

    return probe(cfg)


if __name__ == "__main__":
    run_app(main)
