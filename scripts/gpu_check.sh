#!/usr/bin/env bash
# Everything GPU-specific in one command (make gpu-check). On a machine whose python3 has torch,
# torchvision, pytorch-lightning, torchmetrics, tensorboard, matplotlib and rich, no internet:
#
#   bash scripts/gpu_check.sh --wheels DIR --data DIR [--out DIR] [--python PY]
#
#   --wheels DIR  hydra-core, omegaconf and antlr4-python3-runtime, made beforehand on a machine
#                 with a network by `make gpu-bundle` (.gpu/wheels; scripts/gpu_bundle.sh). For a
#                 python without pytest (the lent H200s have it) add pytest's wheels there too:
#                 pytest, iniconfig, pluggy.
#                 Installed with pip --no-index --no-deps into <out>/site (on PYTHONPATH), never
#                 into the system; only what does not import yet, by name; torch is never touched.
#   --data DIR    the four FashionMNIST .gz files (Debian's dataset-fashion-mnist layout; .gpu/data);
#                 decompressed and checked into data/FashionMNIST/raw. Skipped when already there.
#   --out DIR     where gpu_check.json, the logs and the run go (default logs/gpu_check/<time>)
#   --dry-run     check the arguments, print the steps, run nothing
#   --cpu-smoke   run every step on the CPU at toy sizes (tests the script without a GPU): the
#                 GPU tests run as a rehearsal on the CPU (INITOPT_GPU_REHEARSAL=1, see
#                 tests/test_gpu.py), and the figures mean nothing
#
# Steps (each with a time limit; all together <= 8 minutes on one GPU):
#   1. pytest -m gpu        tests/test_gpu.py and any other test marked gpu
#   2. a 3-epoch default run, trainer.accelerator=gpu, and its results.json
#   3. the default 40-epoch run as a user waits for it: process start to exit (goal <= 40 s)
#   4. the same with module.cuda_graph=true (src/step_graph.py; off by default until measured)
#   5. benchmarks/epoch_time.py --device cuda and benchmarks/optimizer_step.py --device cuda
# Prints a table and writes <out>/gpu_check.json. Exit 0 when every step passed, 1 when one
# failed (the table says which), 2 on bad arguments or a machine without CUDA.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

die() { echo "error: $*" >&2; exit 2; }

WHEELS="" DATA="" OUT="" PY="${PYTHON:-python3}" DRY=0 SMOKE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) [ $# -ge 2 ] || die "--wheels needs a directory"; WHEELS=$2; shift 2 ;;
    --data) [ $# -ge 2 ] || die "--data needs a directory"; DATA=$2; shift 2 ;;
    --out) [ $# -ge 2 ] || die "--out needs a directory"; OUT=$2; shift 2 ;;
    --python) [ $# -ge 2 ] || die "--python needs an interpreter"; PY=$2; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    --cpu-smoke) SMOKE=1; shift ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) die "unknown argument $1 (accepted: --wheels DIR --data DIR --out DIR --python PY --dry-run --cpu-smoke)" ;;
  esac
done
[ -z "$WHEELS" ] || [ -d "$WHEELS" ] || die "--wheels $WHEELS is not a directory"
[ -z "$DATA" ] || [ -d "$DATA" ] || die "--data $DATA is not a directory"
OUT=${OUT:-logs/gpu_check/$(date +%Y-%m-%d_%H-%M-%S)}

# The wheels to install, by name: nothing else from the folder is ever installed. The three the
# app needs must be there; pytest's are taken only when this python has no pytest.
WHEEL_FILES=()
wheel_of() { ls -1 "$WHEELS"/$1.whl 2>/dev/null | head -1; }
if [ -n "$WHEELS" ]; then
  for pattern in 'hydra_core-*' 'omegaconf-*' 'antlr4_python3_runtime-*'; do
    found=$(wheel_of "$pattern")
    [ -n "$found" ] || die "--wheels $WHEELS has no ${pattern%-\*} wheel; make them on a machine with a network with: make gpu-bundle (then --wheels .gpu/wheels)"
    WHEEL_FILES+=("$found")
  done
  if ! "$PY" -c 'import pytest' 2>/dev/null; then
    for pattern in 'pytest-*' 'iniconfig-*' 'pluggy-*'; do
      found=$(wheel_of "$pattern")
      [ -z "$found" ] || WHEEL_FILES+=("$found")
    done
  fi
fi
if [ -n "$DATA" ]; then
  for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    [ -e "$DATA/$f.gz" ] || die "--data $DATA has no $f.gz (expected Debian's dataset-fashion-mnist files)"
  done
fi

if [ $SMOKE = 1 ]; then
  DEVICE=cpu ACCEL=cpu
  export INITOPT_GPU_REHEARSAL=1
  RUN_ARGS=(trainer.max_epochs=1 data.train_subset=2560 trainer.limit_val_batches=2 trainer.limit_test_batches=2)
  E2E_ARGS=("${RUN_ARGS[@]}")
  EPOCH_ARGS=(--reps 1 --epochs 2 --skip-tutorial --train-subset 2560 --graph-row)
  STEP_ARGS=(--reps 20 --warmup 2)
else
  DEVICE=cuda ACCEL=gpu
  RUN_ARGS=(trainer.max_epochs=3)
  E2E_ARGS=()  # the default config: 40 epochs, every diagnostic on
  EPOCH_ARGS=(--reps 3 --epochs 4 --skip-tutorial)  # (d), the tutorial's per-sample loop, is a CPU figure; (e) takes its time
  STEP_ARGS=(--reps 500)
fi
SITE=$(realpath -m "$OUT/site")
DATA_ARG=${DATA:+, system_dir=\"$DATA\"}
# name|time limit in seconds|command. The limits add up to 480 s: the whole check's budget.
STEPS=(
  "install|15|$PY -m pip install --no-index --no-deps --target $SITE ${WHEEL_FILES[*]:-}"
  "data|20|$PY -c 'from src.data import prepare_fashion_mnist; print(prepare_fashion_mnist(\"data\"$DATA_ARG, allow_download=False))'"
  "pytest|140|$PY -m pytest -q -m gpu -p no:cacheprovider --junitxml=$OUT/pytest.xml"
  "run|35|$PY train.py trainer.accelerator=$ACCEL ${RUN_ARGS[*]} print_config=false hydra.run.dir=$OUT/run"
  "e2e|75|$PY train.py trainer.accelerator=$ACCEL ${E2E_ARGS[*]:+${E2E_ARGS[*]} }print_config=false hydra.run.dir=$OUT/e2e"
  "e2e_graph|60|$PY train.py trainer.accelerator=$ACCEL ${E2E_ARGS[*]:+${E2E_ARGS[*]} }module.cuda_graph=true print_config=false hydra.run.dir=$OUT/e2e_graph"
  "epoch_time|105|$PY benchmarks/epoch_time.py --device $DEVICE ${EPOCH_ARGS[*]} --json $OUT/epoch_time.json"
  "optimizer_step|30|$PY benchmarks/optimizer_step.py --device $DEVICE ${STEP_ARGS[*]} --json $OUT/optimizer_step.json"
)

if [ $DRY = 1 ]; then
  echo "gpu_check plan (dry run; nothing is run), output in $OUT:"
  for s in "${STEPS[@]}"; do
    IFS='|' read -r name limit cmd <<<"$s"
    printf '  %-15s (<= %3ss)  %s\n' "$name" "$limit" "$cmd"
  done
  exit 0
fi

mkdir -p "$OUT" || die "cannot create --out $OUT"
# The runs of an earlier check into the same --out: train.py refuses a run dir that holds a run.
rm -rf "$OUT/run" "$OUT/e2e" "$OUT/e2e_graph"
# The installed wheels come first on the path, the system's torch stays what it is.
export PROJECT_ROOT="$ROOT" PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c 'import torch' 2>/dev/null || die "$PY cannot import torch; pass --python with the interpreter that has it"
if [ $SMOKE = 0 ]; then
  "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
    || die "CUDA is not available to $PY (torch.cuda.is_available() is False); run on a GPU machine, or --cpu-smoke"
fi

: >"$OUT/steps.tsv"
for s in "${STEPS[@]}"; do
  IFS='|' read -r name limit cmd <<<"$s"
  log="$OUT/$name.log"
  if [ "$name" = install ] && "$PY" -c 'import hydra, omegaconf, antlr4, pytest' 2>/dev/null; then
    printf '%s\tskipped\t0\t%s\n' "$name" "hydra-core, omegaconf, antlr4, pytest already import" >>"$OUT/steps.tsv"; continue
  fi
  if [ "$name" = install ] && [ ${#WHEEL_FILES[@]} -eq 0 ]; then
    printf '%s\tfailed\t0\t%s\n' "$name" "hydra-core/omegaconf/antlr4 do not import and no --wheels given" >>"$OUT/steps.tsv"; continue
  fi
  echo "== $name: $cmd" >&2
  t0=$(date +%s.%N)
  timeout --kill-after=10 "$limit" bash -c "$cmd" >"$log" 2>&1
  rc=$?
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
  case $rc in 0) status=ok ;; 124|137) status="timeout (${limit}s)" ;; *) status="failed (exit $rc)" ;; esac
  printf '%s\t%s\t%.1f\t%s\n' "$name" "$status" "$secs" "$(tail -1 "$log" | tr '\t' ' ' | cut -c1-200)" >>"$OUT/steps.tsv"
done

"$PY" - "$OUT" "$DEVICE" <<'PYEOF'
"""The table and gpu_check.json, from the steps' logs and the benchmarks' JSON."""
import datetime
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

out, device = Path(sys.argv[1]), sys.argv[2]
steps = [dict(zip(("step", "status", "seconds", "last_line"), line.split("\t"), strict=False))
         for line in (out / "steps.tsv").read_text().splitlines()]
report = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "device": device,
          "device_name": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
          "torch": torch.__version__, "cuda": torch.version.cuda, "steps": steps}
if (out / "pytest.xml").exists():
    suite = ET.parse(out / "pytest.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    report["pytest"] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    report["pytest"]["failed_tests"] = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
                                        if c.find("failure") is not None or c.find("error") is not None]
for name in ("run", "e2e", "e2e_graph"):
    if (out / name / "results.json").exists():
        r = json.loads((out / name / "results.json").read_text())
        report[name] = {k: r.get(k) for k in ("status", "epochs", "val_scores", "test_acc", "seconds", "global_step",
                                              "diagnostics_seconds", "timing", "warnings")}
        report[name]["device"] = (r.get("provenance") or {}).get("device")
for name in ("epoch_time", "optimizer_step"):
    if (out / f"{name}.json").exists():
        report[name] = json.loads((out / f"{name}.json").read_text())
(out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")

print(f"\ngpu_check {report['date']}  {report['device_name']}  torch {report['torch']}  CUDA {report['cuda']}")
print(f"{'step':<16}{'status':<18}{'seconds':>8}  result")
for s in steps:
    detail = s.get("last_line", "")
    if s["step"] == "pytest" and "pytest" in report:
        p = report["pytest"]
        detail = (f"{p['tests']} tests: {p['tests'] - p['failures'] - p['errors'] - p['skipped']} passed, "
                  f"{p['failures'] + p['errors']} failed, {p['skipped']} skipped")
    elif s["step"] == "run" and "run" in report:
        r = report["run"]
        vs = ", ".join(f"{v:.4f}" for v in r["val_scores"] or [])
        detail = f"{r['status']}: val_scores [{vs}], test_acc {r['test_acc']}, train() {r['seconds']} s"
    elif s["step"] in ("e2e", "e2e_graph") and s["step"] in report:
        r = report[s["step"]]
        detail = (f"{r['status']}: {r['epochs']} epoch{'s' * (r['epochs'] != 1)}, process start to exit {float(s['seconds']):.1f} s "
                  f"(goal <= 40 s on an H200), train() {r['seconds']} s, test_acc {r['test_acc']}")
        if s["step"] == "e2e_graph":  # what differs from e2e: the replays, and whether the numbers do
            detail = (f"{r['status']}: process start to exit {float(s['seconds']):.1f} s, train() {r['seconds']} s; "
                      f"graphed {r['timing'].get('graphed_steps', 0)} of {r['global_step']} steps")
            if (report.get("e2e") or {}).get("test_acc") is not None:
                same = r["val_scores"] == report["e2e"]["val_scores"] and r["test_acc"] == report["e2e"]["test_acc"]
                detail += "; val_scores, test_acc " + ("identical to e2e's" if same else "DIFFER from e2e's")
            detail += "".join(f"; {w.removeprefix('module.cuda_graph=true: ')}" for w in r.get("warnings") or []
                              if "cuda_graph" in w)
    elif s["step"] == "epoch_time" and "epoch_time" in report:
        e = report["epoch_time"]
        detail = ("epoch (a) {:.2f} s (b) {:.2f} s (c) {:.2f} s; (a)/(c) {:.3f} (goal <= 1.25); +{:.0f} us/step, "
                  "Lightning's loop +{:.0f}".format(
                      e["median_seconds"]["a"], e["median_seconds"]["b"], e["median_seconds"]["c"], e["ratios"]["a/c"],
                      e["overhead_us_per_step"]["a"], e["overhead_us_per_step"]["e"]))
        if "f/c" in e["ratios"]:
            detail += "; cuda_graph (f) {:.2f} s, (f)/(c) {:.3f}{}".format(
                e["median_seconds"]["f"], e["ratios"]["f/c"], "" if e.get("graph_used") else " (NOT replayed)")
    elif s["step"] == "optimizer_step" and "optimizer_step" in report:
        rows = [r for r in report["optimizer_step"]["rows"] if r["implementation"] == "ours foreach"]
        detail = "ours foreach vs torch foreach: " + ", ".join(
            f"{r['optimizer']} {r['vs_torch_foreach']:.2f}x" for r in rows) + " (goal <= 1.1x)"
    print(f"{s['step']:<16}{s['status']:<18}{float(s['seconds']):>8.1f}  {detail[:200]}")
    if s["step"] in ("e2e", "e2e_graph") and (report.get(s["step"]) or {}).get("timing"):
        # Where the wait went: before train() (imports, CUDA, config), then train()'s parts.
        r, t = report[s["step"]], report[s["step"]]["timing"]
        epochs = t["epoch_seconds"]
        rest = t["fit"] - sum(epochs) - t["checkpoint_seconds"]
        print(f"{'':<42}before train() {float(s['seconds']) - r['seconds']:.1f} s; train() {r['seconds']:.1f} s = "
              f"setup {t['setup']:.1f} + fit {t['fit']:.1f} + test {t['test']:.1f}")
        print(f"{'':<42}fit = epochs {sum(epochs):.1f} (first {epochs[0] if epochs else 0:.2f} s, median "
              f"{sorted(epochs)[len(epochs) // 2] if epochs else 0:.2f} s) + {t['checkpoint_writes']} checkpoint writes "
              f"{t['checkpoint_seconds']:.1f} + start and end {rest:.1f}; diagnostics {r['diagnostics_seconds']:.1f} s in all")
for t in report.get("pytest", {}).get("failed_tests", []):
    print(f"  failed: {t}")
print(f"written: {out / 'gpu_check.json'} (logs: {out}/<step>.log)")
sys.exit(0 if all(s["status"] in ("ok", "skipped") for s in steps) else 1)
PYEOF
