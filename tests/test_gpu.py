"""The GPU path: run by `pytest -m gpu` (scripts/gpu_check.sh runs them), skipped without CUDA.

What they establish on a real GPU:
  - each hand-written optimizer gives the CPU's numbers on CUDA (50 steps, <= 1e-5 relative);
  - training with every diagnostic on under `deterministic=true` (no op that raises);
  - the same seed twice on the same GPU gives the same val_scores;
  - module.cuda_graph=true replays every step and gives the eager steps' numbers, bit for bit,
    and captures beside a DataLoader's pin-memory thread (torchvision pipeline, workers);
  - a run killed after its first checkpoint resumes to the uninterrupted run's val_scores;
  - the data lives on the GPU, and the 49 steps between two divergence reads make no
    host-device sync;
  - bf16-mixed and 16-mixed (GradScaler) train with float32 weights and optimizer state;
  - `trainer=gpu`, `trainer.accelerator=gpu` and `auto` pick the GPU; a cpu,gpu sweep names
    the device of each job.
The last test of the file checks gpu_check.sh's own logic on any machine (--dry-run).

Rehearsal: with INITOPT_GPU_REHEARSAL=1 (`gpu_check.sh --cpu-smoke` sets it) the same tests run
on the CPU, "gpu" read as "cpu", the CUDA-only calls (sync debug mode) left out. That proves
nothing about a GPU; it runs every line of these tests before a GPU's minutes are spent on them.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess

import pytest
import pytorch_lightning as pl
import torch

from tests.conftest import FAST, ROOT, at_once, compose, run_script

CUDA = torch.cuda.is_available()
REHEARSAL = os.environ.get("INITOPT_GPU_REHEARSAL") == "1" and not CUDA
ACCEL, DEVICE = ("cpu", "cpu") if REHEARSAL else ("gpu", "cuda")  # what the tests ask for, what they get
needs_gpu = pytest.mark.skipif(not (CUDA or REHEARSAL), reason="needs a CUDA GPU")
GPU_FAST = [a for a in FAST if not a.startswith("trainer.accelerator")] + [f"trainer.accelerator={ACCEL}"]


def _results(run) -> dict:
    return json.loads((run / "results.json").read_text())


# --- optimizers: CUDA gives the CPU's numbers ---------------------------------------------------

@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("name", ["sgd", "sgd_mom", "adam"])
@pytest.mark.gpu
@needs_gpu
def test_optimizer_on_cuda_matches_cpu_over_50_steps(name, foreach):
    from src.optim import SGD, Adam, SGDMomentum

    make = {"sgd": lambda ps: SGD(ps, lr=0.1, foreach=foreach),
            "sgd_mom": lambda ps: SGDMomentum(ps, lr=0.1, momentum=0.9, foreach=foreach),
            "adam": lambda ps: Adam(ps, lr=1e-3, foreach=foreach)}[name]
    torch.manual_seed(0)
    shapes = [(512, 784), (512,), (256, 512), (256,), (256, 256), (256,), (128, 256), (128,), (10, 128), (10,)]
    cpu = [torch.randn(s) * 0.05 for s in shapes]
    cuda = [p.clone().to(DEVICE) for p in cpu]
    opt_cpu, opt_cuda = make(cpu), make(cuda)
    gen = torch.Generator().manual_seed(1)
    for _ in range(50):  # the same gradients on both devices, made on the host
        grads = [torch.randn(s, generator=gen) * 0.01 for s in shapes]
        for p, g in zip(cpu, grads, strict=True):
            p.grad = g.clone()
        for p, g in zip(cuda, grads, strict=True):
            p.grad = g.to(DEVICE)
        opt_cpu.step()
        opt_cuda.step()
    for a, b in zip(cpu, cuda, strict=True):
        rel = float((a - b.cpu()).abs().max() / a.abs().max())
        assert rel <= 1e-5, f"{name} foreach={foreach}: relative difference {rel:.2e}"


# --- training on the GPU ---------------------------------------------------------------------

@pytest.mark.parametrize("how", [[f"trainer.accelerator={ACCEL}"], [f"trainer={ACCEL}"], ["trainer.accelerator=auto"]])
@pytest.mark.gpu
@needs_gpu
def test_every_way_to_ask_for_the_gpu_trains_on_it(tmp_path, data_dir, how):
    from src.training import train

    seen = {}

    class Where(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.update(model=pl_module.device.type, batch=batch[0].device.type,
                        data=trainer.datamodule.train_x.device.type)

    import tests.test_gpu as me  # the module train() imports by name (pytest's copy is another)

    me._CALLBACK = Where()
    base = [a for a in FAST if not a.startswith("trainer.accelerator")]
    train(compose([*base, *how, "+callbacks._probe._target_=tests.test_gpu._callback"], tmp_path))
    assert _results(tmp_path)["status"] == "ok"
    assert seen == {"model": DEVICE, "batch": DEVICE, "data": DEVICE}  # data.on_device=auto


_CALLBACK = None  # the callback a test hands to train(cfg) through `+callbacks._probe._target_`


def _callback():
    return _CALLBACK


@pytest.mark.gpu
@needs_gpu
def test_diagnostics_on_cuda_under_deterministic(tmp_path, data_dir):
    """Every diagnostic on (histograms, figures), `deterministic: true` (the default): nothing
    raises, and the histograms and figures are written."""
    from src.training import train

    args = [a for a in GPU_FAST if a != "callbacks=none"] + ["diagnostics.every_n_steps=5"]
    cfg = compose(args, tmp_path)
    assert cfg.trainer.deterministic is True
    train(cfg)
    assert _results(tmp_path)["status"] == "ok"
    assert sorted(p.name for p in (tmp_path / "figures").glob("*.png"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"histograms": 0}).Reload()
    hist = events.Tags()["histograms"]
    for kind in ("activations", "gradients", "weights"):
        assert any(t.startswith(f"{kind}/") for t in hist), (kind, hist)


@pytest.mark.gpu
@needs_gpu
def test_same_seed_twice_on_the_gpu_gives_the_same_numbers(tmp_path, data_dir):
    from src.training import train

    runs = []
    for i in range(2):
        out = tmp_path / str(i)
        train(compose([*GPU_FAST, "trainer.max_epochs=2", "trainer.limit_val_batches=null"], out))
        runs.append(_results(out))
    a, b = runs
    diff = max(abs(x - y) for x, y in zip(a["train_losses"], b["train_losses"], strict=True))
    assert a["val_scores"] == b["val_scores"], f"val_scores differ: {a['val_scores']} vs {b['val_scores']}"
    assert a["train_losses"] == b["train_losses"], f"largest train-loss difference {diff:g}"


@pytest.mark.gpu
@needs_gpu
def test_cuda_graph_steps_give_the_eager_numbers(tmp_path, data_dir):
    """module.cuda_graph=true (src/step_graph.py), every diagnostic on: every step replays the
    graph, and the losses, accuracies and test accuracy are the eager run's, bit for bit (the same
    kernels on the same inputs; the optimizer step is the same code)."""
    from src.training import train

    args = [a for a in GPU_FAST if a != "callbacks=none"] + ["trainer.max_epochs=2", "diagnostics.every_n_steps=5"]
    runs = {}
    for flag in ("false", "true"):
        train(compose([*args, f"module.cuda_graph={flag}"], tmp_path / flag))
        runs[flag] = _results(tmp_path / flag)
    eager, graph = runs["false"], runs["true"]
    assert graph["status"] == "ok" and graph["global_step"] == 20
    if not REHEARSAL:  # on the CPU it cannot capture, and says so
        assert graph["timing"]["graphed_steps"] == 20, graph["warnings"]
    diff = max(abs(x - y) for x, y in zip(eager["train_losses"], graph["train_losses"], strict=True))
    assert graph["train_losses"] == eager["train_losses"], f"largest train-loss difference {diff:g}"
    for key in ("train_scores", "val_scores", "test_acc"):
        assert graph[key] == eager[key], key


@pytest.mark.gpu
@needs_gpu
def test_cuda_graph_captures_beside_a_pin_memory_thread(tmp_path, data_dir):
    """data.pipeline=torchvision with workers: the capture at the first step runs while the
    DataLoader's pin-memory thread pins the next batches. A "global" capture would fail that
    thread and the run; step_graph captures "thread_local", and every step replays."""
    from src.training import train

    train(compose([*GPU_FAST, "data.pipeline=torchvision", "data.num_workers=2", "module.cuda_graph=true"], tmp_path))
    results = _results(tmp_path)
    assert results["status"] == "ok" and results["global_step"] == 10, results
    if not REHEARSAL:
        assert results["timing"]["graphed_steps"] == 10, results["warnings"]


@pytest.mark.parametrize("cuda_graph", ["false", "true"])
@pytest.mark.gpu
@needs_gpu
def test_no_host_sync_in_the_hot_path(tmp_path, data_dir, cuda_graph):
    """The steps between two divergence reads (every 50 steps on a GPU: steps 51..99, batches
    50..98), every diagnostic on (none is due there; they log every 200 steps), and Lightning
    logs at step 50 and 100 only: any synchronizing CUDA call (.item(), bool(tensor), a
    device-to-host copy) raises under sync debug mode "error". Eager steps and replayed ones."""
    from callbacks.divergence import GPU_CHECK_EVERY
    from src.training import train

    first, last = GPU_CHECK_EVERY, 2 * GPU_CHECK_EVERY - 2  # batch indices: after one read, before the next

    class SyncWindow(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == first and not REHEARSAL:
                torch.cuda.synchronize()
                torch.cuda.set_sync_debug_mode("error")

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == last and not REHEARSAL:
                torch.cuda.set_sync_debug_mode(0)

    import tests.test_gpu as me  # the module train() imports by name (pytest's copy is another)

    me._CALLBACK = SyncWindow()
    args = [a for a in GPU_FAST if a not in ("callbacks=none",) and not a.startswith("trainer.limit_train")]
    try:
        train(compose([*args, "trainer.limit_train_batches=110", "skip_test=true", f"module.cuda_graph={cuda_graph}",
                       "+callbacks._probe._target_=tests.test_gpu._callback"], tmp_path))
    finally:
        if not REHEARSAL:
            torch.cuda.set_sync_debug_mode(0)
    assert _results(tmp_path)["status"] == "ok"
    if cuda_graph == "true" and not REHEARSAL:  # the window's steps were replays, not eager steps
        assert _results(tmp_path)["timing"]["graphed_steps"] == 110


class KillAfterFirstCheckpoint(pl.Callback):
    """SIGKILL this process at the first step after last.ckpt was first written, unless the run
    was itself resumed (used as +callbacks.kill._target_=tests.test_gpu.KillAfterFirstCheckpoint)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        ckpt = os.path.join(trainer.default_root_dir, "checkpoints", "last.ckpt")
        if trainer.ckpt_path is None and os.path.exists(ckpt):
            os.kill(os.getpid(), signal.SIGKILL)


# the cpu,gpu sweep's second accelerator: in the rehearsal auto, the CPU there (two jobs, two rows all the same)
SWEEP_SECOND = "auto" if REHEARSAL else "gpu"
RESUMED = ["trainer.max_epochs=3", "data.train_subset=2560", "trainer.limit_val_batches=2",
           "trainer.limit_test_batches=2", f"trainer.accelerator={ACCEL}", "callbacks=none", "print_config=false",
           "checkpoint.every_n_train_steps=4"]


@pytest.fixture(scope="module")
def gpu_processes(tmp_path_factory, data_dir):
    """The train.py processes of the two tests below, two at a time: the killed run and its resume
    (one after the other), the uninterrupted run, the cpu,gpu sweep. {name: (its dir, its process)}."""
    tmp = tmp_path_factory.mktemp("gpu_processes")
    whole, killed, sweep = tmp / "whole", tmp / "killed", tmp / "sweep"
    base = [a for a in FAST if not a.startswith("trainer.accelerator")]

    def killed_and_resumed():
        res = run_script("train.py", *RESUMED, f"hydra.run.dir={killed}",
                         "+callbacks.kill._target_=tests.test_gpu.KillAfterFirstCheckpoint", timeout=600)
        assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
        return run_script("train.py", f"ckpt_path={killed}/checkpoints/last.ckpt", timeout=600)

    resumed, straight, swept = at_once(
        killed_and_resumed, lambda: run_script("train.py", *RESUMED, f"hydra.run.dir={whole}", timeout=600),
        lambda: run_script("train.py", "-m", *base, f"trainer.accelerator=cpu,{SWEEP_SECOND}", f"hydra.sweep.dir={sweep}",
                           timeout=600))
    return {"killed": (killed, resumed), "whole": (whole, straight), "sweep": (sweep, swept)}


@pytest.mark.gpu
@needs_gpu
def test_resume_on_cuda_gives_the_uninterrupted_val_scores(gpu_processes):
    (killed, resumed), (whole, straight) = gpu_processes["killed"], gpu_processes["whole"]
    for res in (resumed, straight):
        assert res.returncode == 0, res.stderr[-2000:]
    a, b = _results(whole), _results(killed)
    assert b["resumed_from"] and a["val_scores"] == b["val_scores"] and a["train_losses"] == b["train_losses"]


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
@pytest.mark.gpu
@needs_gpu
def test_mixed_precision_on_cuda(tmp_path, data_dir, precision):
    from src.training import train

    if precision == "bf16-mixed" and not REHEARSAL and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    train(compose([*GPU_FAST, "optim=adam", f"trainer.precision={precision}"], tmp_path))
    r = _results(tmp_path)
    assert r["status"] == "ok" and all(v is not None for v in r["train_losses"])
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert all(t.dtype == torch.float32 for t in ckpt["state_dict"].values() if t.is_floating_point())
    for state in ckpt["optimizer_states"][0]["state"].values():
        assert all(t.dtype == torch.float32 for t in state.values() if torch.is_tensor(t) and t.dim() > 0)


@pytest.mark.gpu
@needs_gpu
def test_cpu_gpu_sweep_names_the_device_of_each_job(gpu_processes):
    sweep, res = gpu_processes["sweep"]
    assert res.returncode == 0, res.stderr[-2000:]
    prov = {}
    for path in sweep.glob("*/results.json"):
        r = json.loads(path.read_text())
        assert r["status"] == "ok"
        prov[r["config"]["trainer"]["accelerator"]] = r["provenance"]
    gpu_name = prov["cpu"]["device"] if REHEARSAL else torch.cuda.get_device_name(0)
    assert prov["cpu"]["device_type"] == "cpu" and prov[SWEEP_SECOND]["device_type"] == DEVICE, prov
    assert prov[SWEEP_SECOND]["device"] == gpu_name, prov
    import csv

    with open(sweep / "summary_groups.csv") as f:
        devices = [row["device"] for row in csv.DictReader(f)]
    assert len(devices) == 2 and gpu_name in devices, devices


# --- the check script itself, on any machine ----------------------------------------------------

def test_gpu_check_dry_run_lists_every_step(tmp_path):
    """`--dry-run` checks the arguments and prints what it would run, installing nothing."""
    wheels, data = tmp_path / "wheels", tmp_path / "data"
    wheels.mkdir()
    data.mkdir()
    for name in ("hydra_core-1.3.2-py3-none-any.whl", "omegaconf-2.3.0-py3-none-any.whl",
                 "antlr4_python3_runtime-4.9.3-py3-none-any.whl"):
        (wheels / name).write_bytes(b"")
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"):
        (data / name).write_bytes(b"")
    res = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run", "--wheels", str(wheels),
                          "--data", str(data), "--out", str(tmp_path / "out")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    e2e = next(line for line in res.stdout.splitlines() if line.strip().startswith("e2e"))
    assert "train.py trainer.accelerator=gpu print_config=false" in e2e  # the default 40 epochs, as is
    graph = next(line for line in res.stdout.splitlines() if line.strip().startswith("e2e_graph"))
    assert "train.py trainer.accelerator=gpu module.cuda_graph=true print_config=false" in graph
    limits = [int(m) for m in re.findall(r"\(<= *(\d+)s\)", res.stdout)]
    assert len(limits) == 8 and sum(limits) <= 480, limits  # the whole check within 8 minutes
    for step in ("pip install --no-index --no-deps", "pytest -q -m gpu", "train.py trainer.accelerator=gpu",
                 "epoch_time.py --device cuda",
                 "optimizer_step.py --device cuda"):
        assert step in res.stdout, (step, res.stdout)
    install = next(line for line in res.stdout.splitlines() if "pip install" in line)
    assert install.count(".whl") == 3 and "torch" not in install  # the three wheels, nothing else
    assert not (tmp_path / "out" / "gpu_check.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--wheels", "/nonexistent"], "--wheels /nonexistent is not a directory"),
    (["--bogus"], "unknown argument --bogus"),
])
def test_gpu_check_bad_arguments_are_one_line(args, message):
    res = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run", *args],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.stderr



def test_gpu_bundle_without_hydra_is_one_line_and_makes_nothing(tmp_path):
    """gpu_bundle.sh reads the versions to bundle from the python it is given; one that lacks
    hydra-core gets one `error:` line, exit 2, and no half-made bundle."""
    import sys

    bare = tmp_path / "bare-python"  # this python without its site-packages: no hydra
    bare.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    bare.chmod(0o755)
    out = tmp_path / "bundle"
    res = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_bundle.sh"), "--python", str(bare), "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0] == "error: hydra-core is not installed in this python (run make setup)", res.stderr
    assert not out.exists() and not list(tmp_path.glob("bundle.tmp.*"))


@pytest.mark.parametrize("args, message", [
    (["--python", "/nonexistent/python"], "no python at /nonexistent/python"),
    (["--bogus"], "unknown argument --bogus"),
])
def test_gpu_bundle_bad_arguments_are_one_line(args, message):
    res = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_bundle.sh"), *args],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.stderr
