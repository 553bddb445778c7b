"""Loss-surface playground: optimizers racing on 2-D losses (tutorial, second half).

    python surfaces.py                         # pathological curvature: SGD vs SGDMom vs Adam
    python surfaces.py surface=steep           # steep optima
    python surfaces.py optim=adam optim.lr=0.5 surface.init=[1,1] surface.steps=200

Everything lives in src/surfaces.py; this file only wires Hydra to `run(cfg, out_dir)`.
"""

import os
import sys
from pathlib import Path

# logs/ and data/ under the repository root (conf/paths), whatever the working directory
os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
import matplotlib  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from src.surfaces import run, summary_table  # noqa: E402


@hydra.main(config_path="conf", config_name="surfaces", version_base="1.3")
def main(cfg: DictConfig) -> None:
    matplotlib.use("Agg")  # headless: figures go to files and TensorBoard, never to a window
    hc = HydraConfig.get()
    try:
        # in single-optimizer mode label it by its config name (adam, sgd_mom, ...)
        record = run(cfg, hc.runtime.output_dir, optim_label=hc.runtime.choices.get("optim"))
    except ValueError as e:  # our validation: one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(summary_table(record))
    print(f"run dir: {hc.runtime.output_dir}")


if __name__ == "__main__":
    main()
