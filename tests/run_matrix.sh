#!/usr/bin/env bash
# The test command under every CPU kernel set torch can pick here (ATEN_CPU_CAPABILITY) and with 1 and 2
# torch threads: tolerances come from the arithmetic, so every combination must pass (tests/precision.py).
# A capability the CPU lacks falls back to the best it has; each run's header says what it used.
set -euo pipefail
cd "$(dirname "$0")/.."
for capability in default avx2 avx512; do
  for threads in 1 2; do
    ATEN_CPU_CAPABILITY=$capability SEG_TEST_THREADS=$threads bash tests/run.sh "$@"
  done
done
