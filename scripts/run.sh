#!/usr/bin/env bash
# Install and start Lepton Console on the embedded default (SQLite, filesystem broker): web
# server, one Celery worker on both queues, and beat, as one process group. Ctrl-C stops all.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
python manage.py migrate --no-input
python manage.py collectstatic --no-input -v0
python manage.py lepton_bootstrap --url "http://${LEPTON_BIND:-127.0.0.1:8000}/"
exec honcho start
