#!/usr/bin/env bash
# Put llama.cpp's GGUF converter into VENV/share/tunedeck/llama.cpp: `bash scripts/gguf-converter.sh VENV`.
# The export to GGUF runs llama.cpp's own convert_hf_to_gguf.py with its own gguf-py, taken from the source package
# that llama-cpp-python (a TuneDeck dependency) is built from, so the converter and the runtime that checks its output
# are one llama.cpp version. They are kept apart from site-packages: that gguf-py is newer than the `gguf` release
# transformers reads. Nothing is done when the version there is already the pinned one.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}
llama_pin=$(grep -E '^llama-cpp-python==' constraints.txt)
version=${llama_pin#*==}
converter=$venv/share/tunedeck/llama.cpp
[ "$(cat "$converter/VERSION" 2>/dev/null)" = "$version" ] && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$venv/bin/python" -m pip --disable-pip-version-check -q download --no-deps --no-binary :all: -d "$tmp" "$llama_pin" \
  2> >(grep -v "^WARNING: Location" >&2)
rm -rf "$converter" && mkdir -p "$converter.partial"
inner=llama_cpp_python-$version/vendor/llama.cpp
tar -xzf "$tmp/llama_cpp_python-$version.tar.gz" -C "$converter.partial" --strip-components=3 \
  "$inner/convert_hf_to_gguf.py" "$inner/conversion" "$inner/gguf-py" "$inner/LICENSE"
echo "$version" > "$converter.partial/VERSION"
mv "$converter.partial" "$converter"
