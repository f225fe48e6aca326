#!/usr/bin/env bash
# Sets up the environment and runs the test suite (slow tests excluded unless
# BFTNODE_SLOW=1). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "${BFTNODE_SLOW:-0}" = "1" ]; then
    exec .venv/bin/python -m pytest -q "$@"
fi
exec .venv/bin/python -m pytest -q -m "not slow" "$@"
