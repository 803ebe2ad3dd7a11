#!/usr/bin/env bash
# Install everything (test tools and Chromium included) and run the test suite.
# Uses PostgreSQL when DATABASE_URL is set, SQLite otherwise; Redis at TEST_REDIS_URL
# (default redis://127.0.0.1:6379/15). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
exec .venv/bin/pytest "$@"
