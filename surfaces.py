"""Loss-surface playground: optimizers racing on 2-D losses (tutorial, second half).

    python surfaces.py                         # pathological curvature: SGD vs SGDMom vs Adam
    python surfaces.py surface=steep           # steep optima
    python surfaces.py optim=adam optim.lr=0.5 surface.init=[1,1] surface.steps=200

Everything lives in src/surfaces.py; this file only wires Hydra to `run(cfg, out_dir)`.
"""

import os
from pathlib import Path

# logs/ and data/ under the repository root (conf/paths), whatever the working directory
os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from src.cli import run_app, run_task  # noqa: E402


@hydra.main(config_path="conf", config_name="surfaces", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()

    def task(cfg):
        # matplotlib and torch are imported inside the task: a stop during their import left
        # the run dir without a results.json (run_task writes `interrupted` there now)
        import matplotlib

        matplotlib.use("Agg")  # headless: figures go to files and TensorBoard, never to a window
        from src.surfaces import run, summary_table

        # in single-optimizer mode label it by its config name (adam, sgd_mom, ...)
        record = run(cfg, hc.runtime.output_dir, optim_label=hc.runtime.choices.get("optim"))
        print(summary_table(record))
        print(f"run dir: {hc.runtime.output_dir}")
        return record

    run_task(task, cfg)  # a bad value: one `error:` line, exit 2


if __name__ == "__main__":
    run_app(main)
