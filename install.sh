#!/usr/bin/env bash
# Install llm4cdsr into ./.venv with the torch build the machine needs, then the package.
#
#   ./install.sh                      # CPU build of torch unless an NVIDIA GPU is found (nvidia-smi)
#   LLM4CDSR_TORCH=cuda ./install.sh  # the CUDA build (PyPI's Linux wheel, with the nvidia-* packages: several GB)
#   LLM4CDSR_TORCH=cpu ./install.sh   # the CPU build even on a GPU machine
#   EXTRAS=serve ./install.sh         # other extras (default: serve,test)
#
# Why: PyPI's Linux torch wheel is the CUDA build (526 MB, and it pulls several GB of nvidia-*
# packages); the CPU build (about 190 MB, 750 MB installed) lives on PyTorch's own index,
# https://download.pytorch.org/whl/cpu. This script installs torch from there first; where that
# index cannot be reached it takes a CPU build from the indexes pip is configured with (a local
# mirror), and it stops, saying why, rather than fall back to the CUDA build unasked.
set -euo pipefail
cd "$(dirname "$0")"

TORCH_SPEC="torch==2.13.0"  # the version pyproject.toml pins
CPU_INDEX="https://download.pytorch.org/whl/cpu"
EXTRAS="${EXTRAS:-serve,test}"
BUILD="${LLM4CDSR_TORCH:-auto}"

if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -d .venv ] || python3 -m venv .venv
  . .venv/bin/activate
fi
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true

if [ "$BUILD" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then BUILD=cuda; else BUILD=cpu; fi
fi

torch_build() {  # prints cpu, cuda or none for the torch installed in this environment
  python - <<'EOF' 2>/dev/null || echo none
import torch
print("cuda" if torch.version.cuda else "cpu")
EOF
}

case "$BUILD" in
  cpu)
    if [ "$(torch_build)" = cpu ]; then
      echo "install.sh: a CPU build of torch is already installed"
    elif python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=15)" "$CPU_INDEX/torch/" 2>/dev/null \
         && python -m pip install -q --timeout 30 --index-url "$CPU_INDEX" "$TORCH_SPEC" \
         && [ "$(torch_build)" = cpu ]; then
      echo "install.sh: torch (CPU build) from $CPU_INDEX"
    else
      echo "install.sh: $CPU_INDEX not reachable; looking for a CPU build on the configured package indexes"
      chosen=$(python -m pip install --dry-run --quiet --ignore-installed --no-deps --report - "$TORCH_SPEC" 2>/dev/null \
               | python -c 'import json, sys; print(json.load(sys.stdin)["install"][0]["metadata"]["version"])' || true)
      case "$chosen" in
        *+cpu*) python -m pip install -q "torch==$chosen"; echo "install.sh: torch $chosen from the configured indexes" ;;
        *) echo "install.sh: no CPU build of $TORCH_SPEC reachable (the configured indexes offer '${chosen:-nothing}')." >&2
           echo "  Give a CPU wheel index (PIP_INDEX_URL=... ./install.sh), or accept the CUDA build:" >&2
           echo "  LLM4CDSR_TORCH=cuda ./install.sh (several GB with its nvidia-* packages)." >&2
           exit 1 ;;
      esac
    fi ;;
  cuda)
    python -m pip install -q "$TORCH_SPEC"
    echo "install.sh: torch $(python -c 'import torch; print(torch.__version__)') (CUDA $(python -c 'import torch; print(torch.version.cuda)'))" ;;
  *)
    echo "install.sh: LLM4CDSR_TORCH must be auto, cpu or cuda, got '$BUILD'" >&2
    exit 2 ;;
esac

python -m pip install -q -e ".[$EXTRAS]"
echo "install.sh: llm4cdsr installed in ${VIRTUAL_ENV}; activate it with: . ${VIRTUAL_ENV}/bin/activate"
