"""Where a number came from: versions, device, code commit and a hash of the config.

`provenance(cfg)` goes into every results.json. The sweep report groups jobs by
`config_hash` (the resolved config without seed, paths and run bookkeeping, so jobs that differ
only in seed share it) and never pools jobs whose torch version or device type differ.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

REPO = Path(__file__).resolve().parents[1]
# Keys that say where or how a run was written, not what was trained.
# How a run is started and shown, not what it measures: `+sweep.rerun=all` or `verbose=true` must
# neither split a group of seeds nor stop a restarted sweep from skipping its finished jobs.
BOOKKEEPING_KEYS = {"seed", "paths", "ckpt_path", "task_name", "print_config", "verbose", "sweep", "hydra"}


def provenance(cfg: DictConfig) -> dict:
    device_type, device = device_of(str(cfg.get("trainer", {}).get("accelerator", "cpu")))
    commit, dirty = git_state()
    return {
        "python": platform.python_version(),
        "torch": _torch_version(),
        "lightning": _version("pytorch-lightning") or _version("lightning"),
        "hydra": _version("hydra-core"),
        "device_type": device_type,
        "device": device,
        "torch_threads": _torch_threads(),
        "cpu_count": os.cpu_count(),
        # Load average at the end of the run: > cpu_count means the machine was shared.
        "load_avg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "host": platform.node(),
        "git_commit": commit,
        "git_dirty": dirty,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "config_hash": config_hash(cfg),
    }


def config_hash(cfg: DictConfig) -> str:
    """12 hex digits of sha256 over `what_is_trained(cfg)`."""
    return hash_of(what_is_trained(cfg))


def hash_of(trained: dict) -> str:
    """config_hash of a config already reduced by `what_is_trained` (each reduction costs ~10 ms)."""
    return hashlib.sha256(json.dumps(trained, sort_keys=True, default=str).encode()).hexdigest()[:12]


def what_is_trained(cfg: DictConfig) -> dict:
    """The resolved config with the seed and all paths taken out: what config_hash hashes.

    The seed and the path keys are replaced by placeholders *before* resolving, so values
    interpolated from them (data.shuffle_seed: ${seed}, data.data_dir: ${paths.data_dir})
    do not leak into the hash; then the bookkeeping keys and any `*_dir`/`*_path` key go."""
    copy = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))  # no struct flag
    if "seed" in copy:
        copy.seed = 0
    for key in list(copy.get("paths") or {}):
        copy.paths[key] = f"<paths.{key}>"
    copy.pop("hydra", None)
    try:
        container = OmegaConf.to_container(copy, resolve=True)
    except Exception:  # e.g. ${hydra:...} outside a Hydra run: the unresolved text still names the config
        container = OmegaConf.to_container(copy, resolve=False)
    return _without_bookkeeping(container, top=True)


def _without_bookkeeping(node, top: bool = False):
    if isinstance(node, dict):
        return {k: _without_bookkeeping(v) for k, v in node.items()
                if not (top and k in BOOKKEEPING_KEYS) and not str(k).endswith(("_dir", "_path"))}
    if isinstance(node, list):
        return [_without_bookkeeping(v) for v in node]
    return node


def device_of(accelerator: str) -> tuple[str, str]:
    """(device type, device name): "cuda" and the GPU's name, or "cpu" and the CPU model."""
    torch = sys.modules.get("torch")  # a training process has it; do not import it for this
    if torch is not None and accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return "cuda", torch.cuda.get_device_name(0)
    if torch is not None and accelerator in ("mps", "auto") and torch.backends.mps.is_available():
        return "mps", "Apple MPS"
    return "cpu", cpu_model()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the code's repository; (None, None) outside git or without git.
    Untracked files (logs/, data/) do not count as dirty."""

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                              timeout=5, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
    except (OSError, subprocess.SubprocessError):
        return None, None
    try:
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        dirty = None
    return commit, dirty


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _torch_version() -> str | None:
    torch = sys.modules.get("torch")
    return str(torch.__version__) if torch is not None else _version("torch")


def _torch_threads() -> int | None:
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None
