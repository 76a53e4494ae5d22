#!/usr/bin/env bash
# make bench-fleet: the fleet-size figures of BENCHMARKS.md, each a run of
# `llorch loadtest` against a real orchestratord on 127.0.0.1 (reports in
# $OUT_DIR/*.json), then the streaming path against nginx and a direct
# connection in one run (Go benchmark BenchmarkProxySustained).
#   ONLY="idle-10k detect-100" limits it to those runs.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
OUT_DIR=${OUT_DIR:-.bench}
GO=${GO:-go}
mkdir -p "$OUT_DIR"

want() { [[ -z "${ONLY:-}" || " $ONLY " == *" $1 "* ]]; }
lt() {
  local name=$1
  shift
  echo "== $name: llorch loadtest $*"
  "$BIN/llorch" loadtest --quiet --orchestratord "$BIN/orchestratord" --json "$OUT_DIR/$name.json" "$@" |
    tee "$OUT_DIR/$name.txt"
}

# What holding the fleet costs: nodes with one pool and one GPU each, no
# requests, no polling by the harness (its GET /v2/nodes would be the cost).
# Agents heartbeat at a third of the node timeout when the control plane
# asks for less: a 30 s heartbeat takes --node-timeout 90s.
want idle-1k && lt idle-1k --nodes 1000 --pools 1 --gpus 1 --heartbeat-interval 10s --rate 0 --duration 60s --poll-interval 0
want idle-10k && lt idle-10k --nodes 10000 --pools 1 --gpus 1 --heartbeat-interval 10s --rate 0 --duration 60s --poll-interval 0
want idle-100k && lt idle-100k --nodes 100000 --pools 1 --gpus 1 --heartbeat-interval 30s --node-timeout 90s --rate 0 --duration 90s \
  --poll-interval 0 --connections 4000 --warmup 10s

# Offline detection at the default timeout (30 s) and stale check (10 s),
# against fleet size.
want detect-100 && lt detect-100 --nodes 100 --rate 5 --duration 60s --faults 5s:kill-node=10
want detect-10k && lt detect-10k --nodes 10000 --pools 1 --gpus 1 --rate 5 --duration 60s --poll-interval 0 \
  --faults 5s:kill-node=20

# The streaming path: direct, nginx least_conn, orchestratord, same engines.
if want sustained; then
  echo "== sustained: BenchmarkProxySustained"
  $GO test -tags e2e -run '^$' -bench 'ProxySustained|ProxyThroughput' -benchtime 1x -count=1 -timeout 20m ./e2e |
    tee "$OUT_DIR/sustained.txt"
fi
