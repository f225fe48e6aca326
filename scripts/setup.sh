#!/usr/bin/env bash
# Creates .venv and installs bftnode with its dev and bench extras, compiling the
# Cython verifier. Idempotent: rerunning only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel "Cython>=3.0"
.venv/bin/python -m pip install -q --no-build-isolation -e ".[dev,bench]"
.venv/bin/python -c "import crypto, sys; from node.tx import tx_decoder_backend as t; b = crypto.verifier_backend(); print('bftnode installed; verifier backend:', b, '; tx decoder:', t()); sys.exit(0 if b == t() == 'cython' else 1)"
