#!/usr/bin/env bash
# The real-browser test drives Debian's Chromium through Playwright (never `playwright install`: it downloads a
# browser of its own). Installs the distribution's package when it is missing.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "Chromium is missing and this is not a Debian/Ubuntu system: install Chromium to run the browser test." >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "Chromium is missing; run 'apt-get install chromium' as root to run the browser test." >&2
    exit 0
  fi
fi
echo "Installing Chromium (apt)..."
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
