#!/usr/bin/env bash
# Install the console into ./.venv and its front-end libraries into ./node_modules.
#   scripts/setup.sh         runtime only
#   scripts/setup.sh --dev   plus test tools and Chromium for the browser tests
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# torch is pinned to 2.13.0 in requirements.txt; pip takes the CPU wheel where one is provided.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
if [ "${1:-}" = "--dev" ]; then
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
else
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
fi

# htmx ships with django-htmx; Chart.js comes from npm, pinned by package-lock.json.
npm ci --no-audit --no-fund --loglevel=error

if [ "${1:-}" = "--dev" ] && ! command -v chromium >/dev/null 2>&1 && [ -z "${CHROMIUM_PATH:-}" ]; then
  if [ "$(id -u)" = "0" ]; then
    apt-get install -y -q chromium >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
  elif command -v sudo >/dev/null 2>&1; then
    sudo apt-get install -y -q chromium >/dev/null
  else
    echo "Chromium is missing: install it (apt-get install chromium) or set CHROMIUM_PATH." >&2
  fi
fi
