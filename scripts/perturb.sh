#!/usr/bin/env bash
# The long fault-injection run, on demand (CI runs the short one with the suite):
#   - the perturbation suite (tests/integration/test_perturbations.py) with more
#     rounds, the slow randomized schedule included, on each runtime;
#   - the fuzz targets (tests/fuzz) with many more examples, explored afresh;
#   - the limits and the flood (tests/integration/test_limits.py) with a longer flood.
#
# Usage: scripts/perturb.sh [ROUNDS [FUZZ_EXAMPLES [FLOOD_S]]]      (defaults 20 2000 60)
# Environment: BFTNODE_PERTURB_RUNTIMES (default "inprocess ray"),
#              BFTNODE_PERTURB_SEED (default 1), BFTNODE_PERTURB_RATE (tx/s, default 50).
# Every test bounds itself (pytest-timeout); each step below is bounded too.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-20}"
EXAMPLES="${2:-2000}"
FLOOD_S="${3:-60}"
PY=.venv/bin/python
status=0

run() {  # run LIMIT_S CMD...: one bounded step; a failure is reported, the others still run
    local limit=$1
    shift
    echo "== $*" >&2
    if ! timeout --signal=INT --kill-after=60 "$limit" "$@"; then
        echo "!! failed: $*" >&2
        status=1
    fi
}

for runtime in ${BFTNODE_PERTURB_RUNTIMES:-inprocess ray}; do
    BFTNODE_PERTURB_RUNTIME="$runtime" BFTNODE_PERTURB_ROUNDS="$ROUNDS" \
        run $((1800 + ROUNDS * 120)) "$PY" -m pytest -q -s -p no:cacheprovider \
        tests/integration/test_perturbations.py
done
BFTNODE_FUZZ_EXAMPLES="$EXAMPLES" BFTNODE_FUZZ_RANDOM=1 \
    run $((600 + EXAMPLES / 2)) "$PY" -m pytest -q -s -p no:cacheprovider tests/fuzz
BFTNODE_FLOOD_S="$FLOOD_S" \
    run $((900 + FLOOD_S * 4)) "$PY" -m pytest -q -s -p no:cacheprovider \
    tests/integration/test_limits.py
exit $status
