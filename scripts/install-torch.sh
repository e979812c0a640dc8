#!/bin/sh
# Installs the torch build that fits this machine into the Python given as $1: the CUDA build where an NVIDIA GPU
# answers, else the CPU build (a plain `pip install torch` on Linux downloads the CUDA build, several GB).
# TORCH_VERSION picks the version (default 2.13.0). A torch already installed is kept.
set -eu
PY="$1"
VERSION="${TORCH_VERSION:-2.13.0}"
if "$PY" -c "import torch" 2>/dev/null; then
  echo "torch $("$PY" -c 'import torch; print(torch.__version__)') already installed"
  exit 0
fi
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "NVIDIA GPU found: installing the CUDA build of torch $VERSION"
  exec "$PY" -m pip install "torch==$VERSION"
fi
echo "no NVIDIA GPU: installing the CPU build of torch $VERSION"
if "$PY" -c "import socket; socket.getaddrinfo('download.pytorch.org', 443)" 2>/dev/null; then
  exec "$PY" -m pip install "torch==$VERSION" --index-url https://download.pytorch.org/whl/cpu
fi
# No route to the PyTorch index: a local mirror or wheel directory (pip's find-links) must provide the CPU wheel.
exec "$PY" -m pip install "torch==$VERSION"
