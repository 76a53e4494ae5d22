#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: start pool-managerd with --gpu-source
# nvml, read its /metrics, and compare every GPU's name, memory total and
# memory used with nvidia-smi. Used memory moves, so nvidia-smi is read
# just before and just after the agent's scrape, and the agent must fall
# within that range (1 MiB of rounding allowed) — one sampling interval.
# Exits non-zero on any mismatch. Usage: scripts/gpu-check.sh [port]
# (GPU_CHECK_AGENT_FLAGS and GPU_CHECK_SOURCE swap the GPU source, to test
# the script itself against simulated GPUs and a stand-in nvidia-smi.)
set -euo pipefail
cd "$(dirname "$0")/.."
port=${1:-19999}
command -v nvidia-smi >/dev/null || { echo "gpu-check: nvidia-smi not found: this needs an NVIDIA GPU machine" >&2; exit 2; }
mkdir -p bin
CGO_CFLAGS="-O2 -g -Wno-deprecated-declarations" go build -o bin/ ./cmd/pool-managerd
rt=$(mktemp -d)
bin/pool-managerd --addr "127.0.0.1:$port" --node-id gpu-check --runtime-dir "$rt" \
  ${GPU_CHECK_AGENT_FLAGS:---gpu-source nvml} --gpu-poll-interval 500ms >"$rt/agent.log" 2>&1 &
agent=$!
trap 'kill $agent 2>/dev/null; wait $agent 2>/dev/null; rm -rf "$rt"' EXIT

metrics() { curl -fsS "http://127.0.0.1:$port/metrics"; }
for _ in $(seq 100); do
  metrics 2>/dev/null | grep -q "^llorch_gpu_source_up{node_id=\"gpu-check\",source=\"${GPU_CHECK_SOURCE:-nvml}\"} 1" && break
  sleep 0.1
done
if ! metrics | grep -q "source=\"${GPU_CHECK_SOURCE:-nvml}\"} 1"; then
  echo "gpu-check: the agent's NVML source is not up:" >&2; cat "$rt/agent.log" >&2; exit 1
fi
sleep 1 # let a poll happen between the two nvidia-smi reads
smi() { nvidia-smi --query-gpu=index,name,memory.total,memory.used --format=csv,noheader,nounits; }
before=$(smi)
scrape=$(metrics)
after=$(smi)

fail=0
while IFS=, read -r idx name total used; do
  idx=$(echo "$idx" | xargs); name=$(echo "$name" | xargs); total=$(echo "$total" | xargs)
  used2=$(echo "$after" | awk -F', *' -v i="$idx" '$1==i {print $4}')
  lo=$(( (used < used2 ? used : used2) - 1 )); hi=$(( (used > used2 ? used : used2) + 1 ))
  sel="gpu=\"$idx\""
  a_total=$(echo "$scrape" | awk -v s="$sel" 'index($0,"llorch_gpu_memory_total_bytes{") == 1 && index($0,s) {print $NF}')
  a_used=$(echo "$scrape" | awk -v s="$sel" 'index($0,"llorch_gpu_memory_used_bytes{") == 1 && index($0,s) {print $NF}')
  a_name=$(echo "$scrape" | grep "^llorch_gpu_info{" | grep "$sel" | sed -n 's/.*model="\([^"]*\)".*/\1/p')
  a_total_mib=$(awk -v b="$a_total" 'BEGIN {printf "%d", b / 1048576 + 0.5}')
  a_used_mib=$(awk -v b="$a_used" 'BEGIN {printf "%d", b / 1048576 + 0.5}')
  status=ok
  [ "$a_name" = "$name" ] || status="NAME MISMATCH"
  [ $(( a_total_mib - total )) -ge -1 ] && [ $(( a_total_mib - total )) -le 1 ] || status="TOTAL MISMATCH"
  [ "$a_used_mib" -ge "$lo" ] && [ "$a_used_mib" -le "$hi" ] || status="USED MISMATCH"
  printf 'GPU %s %-22s total %6s MiB (smi %6s)  used %6s MiB (smi %s..%s)  %s\n' \
    "$idx" "$a_name" "$a_total_mib" "$total" "$a_used_mib" "$used" "$used2" "$status"
  [ "$status" = ok ] || fail=1
done <<<"$before"
[ "$fail" = 0 ] && echo "gpu-check: agent and nvidia-smi agree" || { echo "gpu-check: MISMATCH" >&2; exit 1; }
