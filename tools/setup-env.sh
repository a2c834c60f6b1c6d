#!/usr/bin/env bash
# Usage: tools/setup-env.sh [test|demo]
#
# Creates .venv in the checkout (if it is not there yet) and installs slimdiar with what the
# given target needs: the Python packages, a CPU build of torch on machines without an NVIDIA
# GPU, and the Debian packages used by the simulator's voice pool.
set -euo pipefail
target=${1:-test}
cd "$(dirname "$0")/.."

need_apt=()
if ! python3 -c "import venv, ensurepip" >/dev/null 2>&1; then need_apt+=(python3-venv); fi
# The simulator's offline voice pool (the demo, and the tests that run the quick demo).
for tool in espeak-ng sox flite; do
    command -v "$tool" >/dev/null 2>&1 || need_apt+=("$tool")
done
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${need_apt[*]}"
    sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
pip=(.venv/bin/python -m pip install --disable-pip-version-check -q)

if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
        echo "setup: NVIDIA GPU found, installing torch 2.13.0 (CUDA build)"
        "${pip[@]}" torch==2.13.0
    else
        # No GPU: take the CPU build (a local wheel where the machine has one, else the CPU
        # index of pytorch.org), never the multi-GB CUDA build.
        echo "setup: no NVIDIA GPU, installing torch 2.13.0 (CPU build)"
        "${pip[@]}" torch==2.13.0 --extra-index-url https://download.pytorch.org/whl/cpu \
            --retries 1 --timeout 30 2>&1 | grep -v -e "is ignored" -e "Retrying" || true
        .venv/bin/python -c "import torch" || { echo "setup: torch did not install" >&2; exit 1; }
    fi
fi

extras=test
"${pip[@]}" -e ".[$extras]" 2>&1 | grep -v -e "is ignored" -e "Retrying" || true
# The pretrained GE2E speaker encoder (the default embedding) is the file pretrained.pt inside
# the resemblyzer wheel; only that file is read, so none of its dependencies are installed.
"${pip[@]}" --no-deps resemblyzer==0.1.4 2>&1 | grep -v -e "is ignored" -e "Retrying" || true
.venv/bin/python -c "import slimdiar, torch, transformers, pyannote.metrics, soundfile, soxr, safetensors, onnxruntime, onnxscript" \
    || { echo "setup: the installation is incomplete" >&2; exit 1; }
