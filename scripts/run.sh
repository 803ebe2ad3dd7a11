#!/usr/bin/env bash
# Install and start Lepton Console on the embedded default (SQLite, filesystem broker): web
# server, one Celery worker on both queues, and beat, as one process group. Ctrl-C stops all.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
# A missing PostgreSQL database is created when the account may, or named in one line.
python manage.py lepton_database_ready
python manage.py migrate --no-input
python manage.py collectstatic --no-input -v0
python manage.py lepton_bootstrap --url "http://${LEPTON_BIND:-127.0.0.1:8000}/"
if [ "${DEBUG:-false}" = "true" ]; then
  echo "DEBUG is on: error pages show settings and tracebacks. Never share this console."
else
  echo "DEBUG is off (a 500 shows a plain error page). To debug locally: DEBUG=true scripts/run.sh"
fi
echo "Listening on ${LEPTON_BIND:-127.0.0.1:8000}; another address or port: LEPTON_BIND=0.0.0.0:9000 scripts/run.sh"
exec honcho start
