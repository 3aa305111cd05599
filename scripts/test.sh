#!/usr/bin/env bash
# The test command: builds .venv with runtime and test extras if needed, then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
# requirements.lock pins the run-time closure: the tests run on exactly what the Docker image ships.
.venv/bin/pip install -q -r requirements.txt -r requirements-dev.txt -c requirements.lock
exec .venv/bin/python -m pytest "$@"
