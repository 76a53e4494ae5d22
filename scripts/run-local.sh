#!/usr/bin/env bash
# A local llorch fleet on 127.0.0.1: orchestratord (cloud profile) and
# NODES node agents, each with its own runtime dir under .run/. Prints the
# fleet, then runs until Ctrl-C (or for RUN_FOR seconds) and stops every
# process it started.
set -euo pipefail
cd "$(dirname "$0")/.."

NODES=${NODES:-2}
CP_PORT=${CP_PORT:-8080}
AGENT_BASE_PORT=${AGENT_BASE_PORT:-9200}
RUN_FOR=${RUN_FOR:-}
RUN_DIR=${RUN_DIR:-.run}
BIN=${BIN:-bin}

pids=()
cleanup() {
  trap - EXIT INT TERM
  echo
  echo "stopping the fleet..."
  # Agents first, so they deregister from a live control plane.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[$i]}" 2>/dev/null || true
    wait "${pids[$i]}" 2>/dev/null || true
  done
  echo "stopped; logs are in $RUN_DIR/"
}
trap cleanup EXIT INT TERM

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$CP_PORT" $(seq $((AGENT_BASE_PORT + 1)) $((AGENT_BASE_PORT + NODES))); do
  if port_busy "$p"; then
    echo "port $p on 127.0.0.1 is in use: stop what holds it or set CP_PORT / AGENT_BASE_PORT" >&2
    exit 1
  fi
done

wait_healthy() {
  for _ in $(seq 100); do
    curl -fsS "$1/health" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "$1 did not become healthy; see $RUN_DIR/*.log" >&2
  return 1
}

mkdir -p "$RUN_DIR"
CP_URL="http://127.0.0.1:$CP_PORT"
"$BIN/orchestratord" --cloud-profile --addr "127.0.0.1:$CP_PORT" \
  --node-timeout 6s --stale-check-interval 2s >"$RUN_DIR/orchestratord.log" 2>&1 &
pids+=($!)
wait_healthy "$CP_URL"

for i in $(seq 1 "$NODES"); do
  port=$((AGENT_BASE_PORT + i))
  mkdir -p "$RUN_DIR/node-$i/engines"
  "$BIN/pool-managerd" --cloud-profile --node-id "node-$i" --addr "127.0.0.1:$port" \
    --address "http://127.0.0.1:$port" --orchestratord-url "$CP_URL" \
    --runtime-dir "$RUN_DIR/node-$i/engines" --heartbeat-interval 2s \
    --pools pool-0 >"$RUN_DIR/node-$i.log" 2>&1 &
  pids+=($!)
  wait_healthy "http://127.0.0.1:$port"
done

# Registration is immediate; give the first heartbeats a moment.
for _ in $(seq 50); do
  [ "$("$BIN/llorch" --url "$CP_URL" nodes -o json | grep -c '"status": "online"')" -ge "$NODES" ] && break
  sleep 0.1
done

cat <<EOT

llorch fleet on 127.0.0.1: control plane $CP_URL, $NODES node agents.

$("$BIN/llorch" --url "$CP_URL" nodes)

Look around:
  $BIN/llorch --url $CP_URL nodes          the fleet (add -o json for scripts)
  curl $CP_URL/v2/sd                     Prometheus HTTP service discovery
  curl $CP_URL/metrics                   control plane metrics
  curl http://127.0.0.1:$((AGENT_BASE_PORT + 1))/metrics          node-1's exporter
  curl http://127.0.0.1:$((AGENT_BASE_PORT + 1))/pools/pool-0/status
Announce an engine on node-1 (a handoff file; the pool turns ready):
  echo '{"pool_id":"pool-0","engine":"llamacpp","engine_version":"b4747","url":"http://127.0.0.1:8081","slots":4}' \\
    > $RUN_DIR/node-1/engines/.tmp && mv $RUN_DIR/node-1/engines/.tmp $RUN_DIR/node-1/engines/pool-0_r0.json
Logs: $RUN_DIR/*.log
EOT

if [ -n "$RUN_FOR" ]; then
  sleep "$RUN_FOR"
else
  echo "Ctrl-C stops the fleet."
  wait "${pids[0]}"
fi
