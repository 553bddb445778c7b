#!/usr/bin/env bash
# What scripts/gpu_check.sh needs on a GPU machine without a network, made here in one folder
# (make gpu-bundle), so that the GPU's minutes go to the check alone:
#
#   bash scripts/gpu_bundle.sh [--out DIR] [--python PY]      (default DIR: .gpu, git-ignored)
#
#   DIR/wheels  hydra-core, omegaconf and antlr4-python3-runtime at the versions PY (default:
#               .venv/bin/python) has, so the GPU runs the Hydra the tests here ran with. Pure-
#               Python wheels: they install on any Python 3 (pip wheel builds antlr4's from its
#               source archive).
#   DIR/data    the four FashionMNIST .gz files: Debian's, or gzipped from data/FashionMNIST/raw
#               (gpu_check checks the decompressed content by sha256).
#
# Then copy the repository with DIR to the GPU machine and run there:
#   make gpu-check WHEELS=.gpu/wheels GPU_DATA=.gpu/data
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "error: $*" >&2; exit 2; }

OUT=.gpu PY=.venv/bin/python
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || die "--out needs a directory"; OUT=$2; shift 2 ;;
    --python) [ $# -ge 2 ] || die "--python needs an interpreter"; PY=$2; shift 2 ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) die "unknown argument $1 (accepted: --out DIR --python PY)" ;;
  esac
done
[ -x "$PY" ] || command -v "$PY" >/dev/null || die "no python at $PY (run make setup, or pass --python PY)"

pins=$("$PY" - <<'EOF'
from importlib.metadata import PackageNotFoundError, version

try:
    print(" ".join(f"{n}=={version(n)}" for n in ("hydra-core", "omegaconf", "antlr4-python3-runtime")))
except PackageNotFoundError as e:
    raise SystemExit(f"error: {e.name} is not installed in this python (run make setup)")
EOF
) || exit 2

# Into a fresh folder beside the old one, swapped in at the end: never half a bundle.
tmp=$(mktemp -d "${OUT%/}.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/wheels" "$tmp/data"
# shellcheck disable=SC2086  # pins is a list of requirements
"$PY" -m pip wheel -q --no-deps --disable-pip-version-check -w "$tmp/wheels" $pins \
  || die "pip wheel $pins failed (it needs the package registry)"

SYSTEM=/usr/share/datasets/fashion-mnist RAW=data/FashionMNIST/raw
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  if [ -e "$SYSTEM/$f.gz" ]; then
    cp "$SYSTEM/$f.gz" "$tmp/data/"
  elif [ -e "$RAW/$f" ]; then
    gzip -c "$RAW/$f" >"$tmp/data/$f.gz"
  else
    die "no $f: neither $SYSTEM/$f.gz nor $RAW/$f (run make data)"
  fi
done

rm -rf "$OUT"
mv "$tmp" "$OUT"
trap - EXIT
echo "bundle in $OUT ($(du -sh "$OUT" | cut -f1)):"
(cd "$OUT" && ls -1 wheels/* data/*) | sed 's/^/  /'
echo "on the GPU machine: make gpu-check WHEELS=$OUT/wheels GPU_DATA=$OUT/data"
