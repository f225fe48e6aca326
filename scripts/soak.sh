#!/usr/bin/env bash
# The consensus soak: thousands of seeded simulations (python -m consensus.sim) across the
# configurations the design must survive -- n = 3f+1 validators with f byzantine, for
# 4/1, 7/2 and 10/3, each strategy, every fault before GST -- then the one the checker
# must catch (2 twins of 4, more than f).
#
# Usage: scripts/soak.sh [SEEDS [SEED_START [HEIGHTS]]]       (defaults 1500 40000 10)
#   SEEDS runs per strategy with 4 validators, 2/5 of that with 7, 4/15 with 10: the
#   default is 10,000 safe runs (and 300 beyond-f runs, 1/5 of SEEDS).
# Environment: BFTNODE_SOAK_JOBS (default: the number of cores) runs that many
#   simulations at once.
# Exit 0 when every safe run kept safety and liveness and the beyond-f runs were caught.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS="${1:-1500}"
START="${2:-40000}"
HEIGHTS="${3:-10}"
JOBS="${BFTNODE_SOAK_JOBS:-$(nproc)}"
PY=.venv/bin/python
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

configs=()
for s in silent equivocate twins crash; do
    configs+=("4 1 $s $SEEDS" "7 2 $s $((SEEDS * 2 / 5))" "10 3 $s $((SEEDS * 4 / 15))")
done

one() {  # one N F STRATEGY SEEDS: a line "N/F STRATEGY runs violations liveness seconds rc"
    local n=$1 f=$2 s=$3 seeds=$4 t0 rc=0 last
    t0=$(date +%s.%N)
    $PY -m consensus.sim --validators "$n" --byzantine "$f" --strategy "$s" \
        --seeds "$seeds" --seed-start "$START" --heights "$HEIGHTS" \
        > "$out/$n-$f-$s.log" 2> "$out/$n-$f-$s.err" || rc=$?
    last=$(tail -n 1 "$out/$n-$f-$s.log")
    $PY - "$n/$f" "$s" "$rc" "$t0" "$last" <<'PYEOF'
import json, sys, time
cfg, strategy, rc, t0, last = sys.argv[1:]
try:
    r = json.loads(last)
    print(f"{cfg:6s} {strategy:11s} {r['runs']:6d} {r['violations']:10d} "
          f"{r['liveness_failures']:9d} {time.time() - float(t0):8.0f} {rc}")
except ValueError:
    print(f"{cfg:6s} {strategy:11s} no summary: {last[:60]!r} rc={rc}")
PYEOF
}
export -f one
export PY START HEIGHTS out

t0=$(date +%s)
echo "config strategy      runs violations liveness   wall_s rc"
printf '%s\n' "${configs[@]}" | xargs -P "$JOBS" -L 1 bash -c 'one "$@"' _ | tee "$out/safe.txt"
beyond=$(one 4 2 twins $((SEEDS / 5)))
echo "$beyond   (beyond f: must be caught)"
echo "total wall: $(( $(date +%s) - t0 )) s"

status=0
if awk '$7 != "0" || $4 != "0" || $5 != "0"' "$out/safe.txt" | grep -q .; then
    echo "!! a safe configuration failed (its seed and trace: rerun it alone)" >&2
    status=1
fi
if ! awk '{exit !($4 > 0 && $7 == "1")}' <<<"$beyond"; then
    echo "!! more than f twins were not caught: the checker cannot fail" >&2
    status=1
fi
exit $status
