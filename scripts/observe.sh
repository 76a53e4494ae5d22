#!/usr/bin/env bash
# make observe: the local fleet of `make run`, plus Prometheus, Jaeger and
# (where Debian's prometheus-alertmanager is installed) Alertmanager on
# 127.0.0.1, wired with the files of deploy/ (only addresses and paths
# changed), and a steady trickle of requests, so the dashboards, alerts,
# exemplars and traces have something to show. Ctrl-C stops everything.
# Ports: CP_PORT (8080), AGENT_BASE_PORT (9200: agents on 9201...),
# PROM_PORT (9090), AM_PORT (9093), JAEGER_UI_PORT (16686),
# JAEGER_OTLP_PORT (4318); NODES (3) node agents.
set -euo pipefail
cd "$(dirname "$0")/.."

CP_PORT=${CP_PORT:-8080}
PROM_PORT=${PROM_PORT:-9090}
AM_PORT=${AM_PORT:-9093}
JAEGER_UI_PORT=${JAEGER_UI_PORT:-16686}
JAEGER_OTLP_PORT=${JAEGER_OTLP_PORT:-4318}
NODES=${NODES:-3}
RUN_DIR=${RUN_DIR:-.run}
BIN=${BIN:-bin}
JAEGER=${JAEGER:-.tools/jaeger}
RATE_SLEEP=${RATE_SLEEP:-0.3} # seconds between requests of the load loop

command -v prometheus >/dev/null || { echo "prometheus is not installed: make observe installs it (apt-get install prometheus)" >&2; exit 1; }
[ -x "$JAEGER" ] || { echo "$JAEGER missing: make observe builds it (make tools)" >&2; exit 1; }
# Debian's prometheus-alertmanager (make promtool installs it), if present.
alertmanager=$(command -v prometheus-alertmanager || command -v alertmanager || true)

# Installing Debian's prometheus (or prometheus-alertmanager) on a machine
# with systemd starts its service on the default port: say so rather than
# show that one's empty targets.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for var in PROM_PORT JAEGER_UI_PORT JAEGER_OTLP_PORT ${alertmanager:+AM_PORT}; do
  if port_busy "${!var}"; then
    echo "port ${!var} on 127.0.0.1 is in use (a packaged prometheus or alertmanager service?): stop it or set $var" >&2
    exit 1
  fi
done

obs="$RUN_DIR/observe"
rm -rf "$obs"; mkdir -p "$obs/rules"
cp alerts/*.yml "$obs/rules/"
token=${LLORCH_API_TOKEN:-observe-$RANDOM$RANDOM}
printf '%s' "$token" >"$obs/token"
export LLORCH_API_TOKEN=$token

extra=()
cleanup() {
  trap - EXIT INT TERM
  for ((i = ${#extra[@]} - 1; i >= 0; i--)); do
    kill -TERM "${extra[$i]}" 2>/dev/null || true
    wait "${extra[$i]}" 2>/dev/null || true
  done
}
trap cleanup EXIT INT TERM

sed -e "s/0.0.0.0:4318/127.0.0.1:$JAEGER_OTLP_PORT/" -e "s/0.0.0.0:16686/127.0.0.1:$JAEGER_UI_PORT/" \
  -e "s/0.0.0.0:16685/127.0.0.1:0/" -e "s/0.0.0.0:13133/127.0.0.1:0/" deploy/jaeger/jaeger.yaml >"$obs/jaeger.yaml"
"$JAEGER" --config "$obs/jaeger.yaml" >"$obs/jaeger.log" 2>&1 &
extra+=($!)

if [ -n "$alertmanager" ]; then
  "$alertmanager" --config.file=deploy/alertmanager/alertmanager.yml --storage.path="$obs/alertmanager" \
    --web.listen-address="127.0.0.1:$AM_PORT" --cluster.listen-address= >"$obs/alertmanager.log" 2>&1 &
  extra+=($!)
fi

sed -e "s#orchestratord:8080#127.0.0.1:$CP_PORT#g" -e "s#/etc/prometheus/llorch-token#$PWD/$obs/token#" \
  -e "s#/etc/prometheus/rules#$PWD/$obs/rules#" -e "s#alertmanager:9093#127.0.0.1:$AM_PORT#" \
  deploy/prometheus/prometheus.yml >"$obs/prometheus.yml"
# Prometheus starts once every node has registered: its first discovery
# (GET /v2/sd, then every 30 s) then finds the whole fleet.
(
  for _ in $(seq 1200); do
    [ "$(curl -fsS -H "Authorization: Bearer $token" "http://127.0.0.1:$CP_PORT/v2/sd" 2>/dev/null | grep -o '"targets"' | wc -l)" -ge "$NODES" ] && break
    sleep 0.1
  done
  exec prometheus --config.file="$obs/prometheus.yml" --storage.tsdb.path="$obs/data" \
    --web.listen-address="127.0.0.1:$PROM_PORT" --enable-feature=exemplar-storage >"$obs/prometheus.log" 2>&1
) &
extra+=($!)

# The daemons send their traces to Jaeger.
export OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$JAEGER_OTLP_PORT"

# A trickle of streamed OpenAI requests once the fleet is up.
(
  for _ in $(seq 600); do curl -fsS "http://127.0.0.1:$CP_PORT/health" >/dev/null 2>&1 && break; sleep 0.1; done
  sleep 3
  while :; do
    curl -sS -N -H "Authorization: Bearer $token" "http://127.0.0.1:$CP_PORT/v1/chat/completions" \
      -d '{"stream":true,"max_tokens":16,"messages":[{"role":"user","content":"Tell me a story"}]}' >/dev/null 2>&1 || true
    sleep "$RATE_SLEEP"
  done
) &
extra+=($!)

cat <<EOT
Observability on 127.0.0.1 (with the fleet below):
  Prometheus    http://127.0.0.1:$PROM_PORT   (targets, alerts: /targets, /alerts; rules from alerts/)
  Alertmanager  $([ -n "$alertmanager" ] && echo "http://127.0.0.1:$AM_PORT   (deploy/alertmanager; its receivers' URLs are examples)" || echo "not installed (apt-get install prometheus-alertmanager)")
  Jaeger        http://127.0.0.1:$JAEGER_UI_PORT  (traces of orchestratord and pool-managerd)
  Grafana       not started (none is packaged here): in yours, provision
                deploy/grafana/provisioning with its URLs pointed at Prometheus and Jaeger,
                and import dashboards/*.json (or copy them where the provider looks);
                see docs/observability.md.
API token for this run: $token  (curl -H "Authorization: Bearer $token" ...)
EOT

scripts/run-local.sh
