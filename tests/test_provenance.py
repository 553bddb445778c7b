"""src/provenance.py: what every results.json says about where its numbers came from, and the
config hash the sweep report groups jobs by (same hash = same experiment up to the seed and the
paths). In-process, on hand-made configs; test_report_stats.py composes the real ones."""

from __future__ import annotations

import hashlib
import json
import platform
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import torch
from omegaconf import OmegaConf

import src.provenance as prov
from src.provenance import config_hash, cpu_model, device_of, git_state, provenance


def h(d: dict) -> str:
    return config_hash(OmegaConf.create(d))


def test_the_hash_is_sha256_of_the_sorted_json_cut_to_12_hex_digits():
    assert h({"optim": {"lr": 0.1}, "b": [1, "x"]}) == \
        hashlib.sha256(json.dumps({"b": [1, "x"], "optim": {"lr": 0.1}}, sort_keys=True).encode()).hexdigest()[:12]
    assert re.fullmatch(r"[0-9a-f]{12}", h({}))
    assert h({"a": 1, "b": 2}) == h({"b": 2, "a": 1})  # key order does not matter
    assert h({"a": 1}) != h({"a": 2}) and h({"a": [1, 2]}) != h({"a": [2, 1]})


def sha12(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def test_what_the_seed_and_the_paths_read_as_before_the_hash():
    """Interpolations see the seed as 0 and each path as "<paths.key>": pinned against the
    JSON the hash is taken of."""
    assert h({"seed": 5, "s": "${seed}"}) == sha12({"s": 0})
    assert h({"paths": {"root": "/x"}, "p": "${paths.root}/data"}) == sha12({"p": "<paths.root>/data"})
    # Hydra's own node goes before resolving: its ${hydra:...} would make the rest unresolvable
    assert h({"hydra": {"cwd": "${hydra:runtime.cwd}"}, "seed": 1, "s": "${seed}"}) == sha12({"s": 0})
    assert h({"lr": "${base}", "base": 0.5}) == sha12({"lr": 0.5, "base": 0.5})


def test_seed_paths_and_bookkeeping_are_left_out():
    base = {"seed": 1, "data": {"shuffle_seed": "${seed}", "data_dir": "${paths.data_dir}", "batch_size": 256},
            "paths": {"data_dir": "/home/a/data", "log_dir": "/home/a/logs"}, "task_name": "train",
            "print_config": True, "ckpt_path": None, "optim": {"lr": 0.1}}
    other = {**base, "seed": 7, "paths": {"data_dir": "/b", "log_dir": "/c"}, "task_name": "x",
             "print_config": False, "ckpt_path": "/ckpt", "hydra": {"run": {"dir": "/d"}}, "verbose": True,
             "sweep": {"rerun": "all"}}
    assert h(base) == h(other)  # also what was interpolated from the seed or the paths
    assert h(base) == h({**base, "optim": {"lr": 0.1, "cache_dir": "/x", "model_path": "/y"}})  # *_dir, *_path
    assert h(base) != h({**base, "optim": {"lr": 0.2}})
    assert h(base) != h({**base, "data": {**base["data"], "batch_size": 128}})
    # only the top-level seed is bookkeeping: a seed inside a group is part of the experiment
    assert h({"init": {"seed": 1}}) != h({"init": {"seed": 2}})
    assert h({"init": {"task_name": "a"}}) != h({"init": {"task_name": "b"}})
    # lists are walked too
    assert h({"x": [{"a_dir": 1, "v": 1}]}) == h({"x": [{"a_dir": 2, "v": 1}]}) != h({"x": [{"v": 2}]})


def test_a_config_that_cannot_resolve_still_hashes_by_its_text():
    # (e.g. ${hydra:...} outside a Hydra run; a key that is nowhere fails the same way, whatever
    # state other tests left Hydra in)
    cfg = {"name": "${nowhere.optim}", "lr": 0.1}
    assert h(cfg) == sha12(cfg) and h(cfg) != h({**cfg, "lr": 0.2})
    assert h(cfg) != h({"name": "${nowhere.init}", "lr": 0.1})
    struct = OmegaConf.create({"seed": 3, "a": 1})
    OmegaConf.set_struct(struct, True)  # Hydra's configs are structs: the hash works on a copy
    assert config_hash(struct) == h({"seed": 0, "a": 1}) and struct.seed == 3


def test_provenance_fields(monkeypatch):
    monkeypatch.setattr(prov, "git_state", lambda: ("abc123", True))
    p = provenance(OmegaConf.create({"seed": 1, "trainer": {"accelerator": "cpu"}}))
    assert set(p) == {"python", "torch", "lightning", "hydra", "device_type", "device", "torch_threads", "cpu_count",
                      "load_avg_1min", "host", "git_commit", "git_dirty", "finished_at", "config_hash"}
    assert (p["git_commit"], p["git_dirty"], p["cpu_count"]) == ("abc123", True, prov.os.cpu_count())
    assert p["lightning"] == prov._version("pytorch-lightning") and p["lightning"].startswith("2.")
    assert p["hydra"] == prov._version("hydra-core")
    assert p["python"] == platform.python_version() and p["torch"] == torch.__version__
    assert p["device_type"] == "cpu" and p["device"] == cpu_model()
    assert p["torch_threads"] == torch.get_num_threads() and p["host"] == platform.node()
    assert p["config_hash"] == h({"seed": 0, "trainer": {"accelerator": "cpu"}})
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", p["finished_at"])
    assert abs((datetime.fromisoformat(p["finished_at"]) - datetime.now().astimezone()).total_seconds()) < 60
    monkeypatch.setattr(prov.os, "getloadavg", lambda: (1.23456, 0, 0))
    assert provenance(OmegaConf.create({}))["load_avg_1min"] == 1.23
    asked = []
    monkeypatch.setattr(prov, "device_of", lambda a: asked.append(a) or ("cpu", "x"))
    provenance(OmegaConf.create({}))  # no trainer: cpu
    provenance(OmegaConf.create({"trainer": {"accelerator": "gpu"}}))
    assert asked == ["cpu", "gpu"]
    monkeypatch.delattr(prov.os, "getloadavg")  # not on every OS
    assert provenance(OmegaConf.create({}))["load_avg_1min"] is None
    assert prov._version("no-such-distribution-here") is None
    assert prov._version("hydra-core").startswith("1.3")


def test_without_torch_imported_nothing_imports_it(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch")
    assert prov._torch_threads() is None
    assert prov._torch_version() == prov._version("torch")  # from the installed distribution
    assert device_of("gpu") == ("cpu", cpu_model())
    assert "torch" not in sys.modules


def test_device_of_mps_and_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert device_of("mps") == device_of("auto") == ("mps", "Apple MPS")
    assert device_of("gpu") == device_of("cpu") == ("cpu", cpu_model())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: f"GPU {i}")
    assert device_of("auto") == device_of("cuda") == device_of("gpu") == ("cuda", "GPU 0")  # cuda first
    assert device_of("mps") == ("mps", "Apple MPS")


def test_cpu_model_from_cpuinfo_else_platform(monkeypatch):
    def cpuinfo(text):
        def read_text(self):
            assert self == Path("/proc/cpuinfo")
            return text
        return read_text

    monkeypatch.setattr(Path, "read_text", cpuinfo("processor : 0\nmodel name\t: Some CPU: v2 @ 2GHz \nflags: x\n"))
    assert cpu_model() == "Some CPU: v2 @ 2GHz"
    monkeypatch.setattr(Path, "read_text", cpuinfo("processor : 0\n"))
    monkeypatch.setattr(platform, "processor", lambda: "")
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert cpu_model() == "aarch64"

    def unreadable(self):
        raise OSError("no /proc here")

    monkeypatch.setattr(Path, "read_text", unreadable)
    monkeypatch.setattr(platform, "processor", lambda: "i386")
    assert cpu_model() == "i386"
    monkeypatch.setattr(platform, "processor", lambda: "")
    monkeypatch.setattr(platform, "machine", lambda: "")
    assert cpu_model() == "unknown CPU"


def test_git_state_commit_and_dirt(tmp_path, monkeypatch):
    """In a repository of its own: the commit, clean, dirty after a tracked file changes, and
    untracked files (logs/, data/) never count."""
    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), *args], capture_output=True, text=True, check=True).stdout

    monkeypatch.setattr(prov, "REPO", tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # even if the temp dir is in a repo
    assert git_state() == (None, None)  # not (yet) a repository: git fails, nothing is made up
    git("init", "-q")
    (tmp_path / "a.txt").write_text("1")
    git("add", "a.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    monkeypatch.setattr(prov, "REPO", tmp_path)
    commit = git("rev-parse", "HEAD").strip()
    assert re.fullmatch(r"[0-9a-f]{40}", commit)
    (tmp_path / "untracked.log").write_text("x")
    assert git_state() == (commit, False)
    (tmp_path / "a.txt").write_text("2")
    assert git_state() == (commit, True)
    real = subprocess.run

    def status_fails(args, **kw):
        if "status" in args:
            raise subprocess.TimeoutExpired(args, 5)
        return real(args, **kw)

    monkeypatch.setattr(subprocess, "run", status_fails)
    assert git_state() == (commit, None)  # the commit without a verdict on dirt
