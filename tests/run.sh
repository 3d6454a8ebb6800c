#!/usr/bin/env bash
# The one test command (README): makes .venv if needed, installs the test requirements, runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
# pip once per set of requirements: a pip run that finds everything installed still costs ~10 s (index lookups),
# which CI paid three times. The stamp holds the requirement files as installed; any change to them reinstalls.
STAMP=.venv/.tests-requirements
WANT=$(cat tests/requirements.txt tests/requirements-nodeps.txt)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  rm -f "$STAMP"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r tests/requirements.txt
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -r tests/requirements-nodeps.txt
  printf '%s\n' "$WANT" > "$STAMP"
fi
exec .venv/bin/python -m pytest "$@"
