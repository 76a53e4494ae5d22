#!/usr/bin/env bash
# make soak: ten minutes of load on a 1,000-node virtual fleet with every
# fault `llorch loadtest` knows, repeated, at the control plane's default
# intervals (heartbeat 10 s, node timeout 30 s, stale check 10 s). Fails
# (exit 1) on any lost, hung or doubled task or any other invariant
# violation; the report is in $OUT_DIR/soak.json.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
OUT_DIR=${OUT_DIR:-.bench}
NODES=${NODES:-1000}
RATE=${RATE:-40}
DURATION=${DURATION:-600}   # seconds
CYCLE=${CYCLE:-60}          # one round of faults every CYCLE seconds
mkdir -p "$OUT_DIR"

faults=()
round=0
for ((t = 10; t + 50 <= DURATION; t += CYCLE)); do
  faults+=("${t}s:kill-node=5:60s" "$((t + 2))s:freeze-node=3:50s" "$((t + 3))s:freeze-node=2:5s"
    "$((t + 5))s:hang-engine=2:20s" "$((t + 6))s:error-engine=2:20s" "$((t + 7))s:stall-engine=2:20s"
    "$((t + 8))s:slow-reader=10:30s" "$((t + 10))s:bad-heartbeats=40" "$((t + 12))s:register-flood=200"
    "$((t + 14))s:drain-node=2:20s")
  if ((round % 2 == 0)); then faults+=("$((t + 11))s:clock-skew=1:+2h"); else faults+=("$((t + 11))s:clock-skew=1:-2h"); fi
  case $((round % 3)) in
    1) faults+=("$((t + 30))s:restart-control-plane:2s") ;;
    2) faults+=("$((t + 30))s:kill-control-plane:1s") ;;
  esac
  round=$((round + 1))
done
schedule=$(IFS=,; echo "${faults[*]}")

echo "soak: $NODES nodes, $RATE requests/s for ${DURATION}s, ${#faults[@]} faults in $round rounds"
exec "$BIN/llorch" loadtest --nodes "$NODES" --rate "$RATE" --duration "${DURATION}s" \
  --orchestratord "$BIN/orchestratord" --orchestratord-log "$OUT_DIR/soak-orchestratord.log" \
  --faults "$schedule" --json "$OUT_DIR/soak.json"
