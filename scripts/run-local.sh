#!/usr/bin/env bash
# A local llorch fleet on 127.0.0.1: orchestratord (cloud profile) and
# NODES node agents, each launching engines for its pools — the simulator
# (llorch sim-engine) with simulated GPUs by default, or a real llama-server
# when LLAMA_SERVER and MODEL are set. Prints the fleet, runs a task and an
# OpenAI request through the control plane, then runs until Ctrl-C (or for
# RUN_FOR seconds) and stops every process it started.
set -euo pipefail
cd "$(dirname "$0")/.."

NODES=${NODES:-3}
LLAMA_SERVER=${LLAMA_SERVER:-}
MODEL=${MODEL:-}
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

engine_flags=(--engine sim --model /models/stories260K.gguf)
engine_desc="simulated engines (llorch sim-engine)"
if [ -n "$LLAMA_SERVER" ]; then
  if [ -z "$MODEL" ]; then
    echo "LLAMA_SERVER is set: also set MODEL to a GGUF file (e.g. ../shared/models/stories260K.gguf)" >&2
    exit 1
  fi
  engine_flags=(--engine "$LLAMA_SERVER" --model "$(realpath "$MODEL")" --engine-ctx-size 1024)
  engine_desc="llama-server ($LLAMA_SERVER, model $MODEL)"
fi

# With LLORCH_API_TOKEN set, the daemons (and the llorch CLI) require it:
# the requests below carry it too.
auth=() auth_hint=""
if [ -n "${LLORCH_API_TOKEN:-}" ]; then
  auth=(-H "Authorization: Bearer $LLORCH_API_TOKEN")
  auth_hint="-H \"Authorization: Bearer $LLORCH_API_TOKEN\" "
fi

mkdir -p "$RUN_DIR"
CP_URL="http://127.0.0.1:$CP_PORT"
"$BIN/orchestratord" --cloud-profile --addr "127.0.0.1:$CP_PORT" \
  --node-timeout 6s --stale-check-interval 2s >"$RUN_DIR/orchestratord.log" 2>&1 &
pids+=($!)
wait_healthy "$CP_URL"

for i in $(seq 1 "$NODES"); do
  port=$((AGENT_BASE_PORT + i))
  mkdir -p "$RUN_DIR/node-$i/engines"
  # node-1 serves two pools; the simulated engines of later nodes are slower,
  # so the fleet is heterogeneous like a real one.
  pools=pool-0
  [ "$i" = 1 ] && pools=pool-0,pool-1
  extra=()
  if [ -z "$LLAMA_SERVER" ]; then
    # node-1 is fast with two H200s; later nodes are slower, with less memory.
    gpus=2xH200:141GiB
    [ "$i" -gt 1 ] && gpus=1xL40S:48GiB
    extra=(--engine-args "--tokens-per-second $((120 / i))" --gpu-source sim --sim-gpus "$gpus")
  fi
  "$BIN/pool-managerd" --cloud-profile --node-id "node-$i" --addr "127.0.0.1:$port" \
    --address "http://127.0.0.1:$port" --orchestratord-url "$CP_URL" \
    --runtime-dir "$RUN_DIR/node-$i/engines" --heartbeat-interval 2s \
    --pools "$pools" "${engine_flags[@]}" "${extra[@]}" >"$RUN_DIR/node-$i.log" 2>&1 &
  pids+=($!)
  wait_healthy "http://127.0.0.1:$port"
done

# Wait until every node's engines are announced ready (a real model may
# take a while to load).
pools_total=$((NODES + 1))
for _ in $(seq 1200); do
  [ "$("$BIN/llorch" --url "$CP_URL" nodes -o json | grep -c '"ready": true')" -ge "$pools_total" ] && break
  sleep 0.1
done
model=$(curl -fsS "${auth[@]}" "$CP_URL/v1/models" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')

cat <<EOT

llorch fleet on 127.0.0.1: control plane $CP_URL, $NODES node agents, $engine_desc.

$("$BIN/llorch" --url "$CP_URL" nodes)

A task through the control plane (POST /v2/tasks, then its event stream):
$(curl -fsS "${auth[@]}" "$CP_URL/v2/tasks" -d '{"task_id":"demo","prompt":"Once upon a time","max_tokens":8,"model_ref":"'"$model"'"}')
$(curl -sN "${auth[@]}" "$CP_URL/v2/tasks/demo/events" | grep -E '^(event|data)' | paste - - | sed 's/^/  /')

An OpenAI chat completion (any OpenAI client works with $CP_URL/v1):
$(curl -fsS "${auth[@]}" "$CP_URL/v1/chat/completions" -d '{"model":"'"$model"'","messages":[{"role":"user","content":"Tell me a story"}],"max_tokens":8}' | sed -n 's/.*"content":"\([^"]*\)".*/  \1/p')

Look around:
  $BIN/llorch --url $CP_URL nodes          the fleet (add -o json for scripts)
  curl $auth_hint$CP_URL/v2/sd                     Prometheus HTTP service discovery
  curl $CP_URL/metrics                   control plane metrics
  curl http://127.0.0.1:$((AGENT_BASE_PORT + 1))/metrics          node-1's exporter
  curl http://127.0.0.1:$((AGENT_BASE_PORT + 1))/pools/pool-0/status
  curl $auth_hint"$CP_URL/v2/placement/explain?model=$model"   how placement ranks the pools now
Kill an engine and watch its agent restart it:
  kill \$(sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' $RUN_DIR/node-2/engines/pool-0_r0.json); $BIN/llorch --url $CP_URL nodes
Logs: $RUN_DIR/*.log, engine logs in $RUN_DIR/node-*/engines/*.log
EOT

if [ -n "$RUN_FOR" ]; then
  sleep "$RUN_FOR"
else
  echo "Ctrl-C stops the fleet."
  wait "${pids[0]}"
fi
