#!/usr/bin/env bash
# The one test command (README): makes .venv if needed, installs the test requirements, runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r tests/requirements.txt
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -r tests/requirements-nodeps.txt
exec .venv/bin/python -m pytest "$@"
