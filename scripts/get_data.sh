#!/usr/bin/env bash
# Put FashionMNIST into $1/FashionMNIST/raw (default: data/). Idempotent.
# Order: already there -> Debian's dataset-fashion-mnist package -> torchvision's download.
set -euo pipefail
DATA_DIR="${1:-data}"
PY=.venv/bin/python
SYS_DIR=/usr/share/datasets/fashion-mnist

if [ ! -e "$SYS_DIR/train-images-idx3-ubyte.gz" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian package dataset-fashion-mnist (FashionMNIST, offline)"
    if ! { apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
           { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; }; }; then
      echo "note: apt-get install dataset-fashion-mnist failed; will try torchvision's download" >&2
    fi
  else
    echo "note: cannot apt-get install dataset-fashion-mnist here (needs root and apt);" \
         "run 'sudo apt-get install dataset-fashion-mnist' or let torchvision download the data" >&2
  fi
fi
"$PY" - "$DATA_DIR" <<'PYEOF'
import sys

from src.data import prepare_fashion_mnist
from src.errors import DataError

try:
    source = prepare_fashion_mnist(sys.argv[1])
except DataError as e:
    sys.exit(f"error: {e}")
print(f"FashionMNIST ready in {sys.argv[1]}/FashionMNIST/raw (source: {source})")
PYEOF
