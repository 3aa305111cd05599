#!/usr/bin/env bash
# The test command: builds .venv with runtime and test extras if needed, then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -r requirements.txt -r requirements-dev.txt
exec .venv/bin/python -m pytest "$@"
