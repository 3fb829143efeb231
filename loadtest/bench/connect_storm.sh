#!/usr/bin/env bash
# The connect storm: N sockets opening at once to one node (own Redis): with
# no handshake limits, with a socket cap under N, then with the cap and a
# per-IP handshake rate, the limits an operator sets against a storm. Reports the
# time to all connected, connect-time percentiles, the refusals the load
# tester saw, and the node's own count of what it refused and why.
#
#   loadtest/bench/connect_storm.sh [sockets] [concurrency] [per_ip_rate] [burst] [max_connections]
#
# The load tester spreads its sockets over 127.0.0.2-9, so a per-IP limit
# applies to each of 8 sources.
set -euo pipefail
cd "$(dirname "$0")/../.."
SOCKETS=${1:-18000}
CONCURRENCY=${2:-18000}
PER_IP=${3:-250}
BURST=${4:-500}
MAX_CONNECTIONS=${5:-16000}
SECRET=storm-secret-0123456789abcdef0123456789
source loadtest/bench/lib.sh
build_binaries
start_redis

storm() {
  local label=$1
  shift
  start_node "storm-$label" "$@"
  echo "== $label ${*:-(no limits)}"
  "$LT" idle --url "ws://127.0.0.1:$NODE_PORT" --secret "$SECRET" --sockets "$SOCKETS" --duration 3 \
    --connect-concurrency "$CONCURRENCY" --connect-timeout 60 --timeout 300 --server-pid "$NODE_PID" --quiet \
    >"$BENCH_DIR/$label.json" || true
  grep '^{' "$BENCH_DIR/$label.json" | tail -1 | jq -c '{attempted: .connects.attempted, connected: .connects.connected, failures: .connects.failures,
          ramp_s: .connects.ramp_s, per_s: .connects.per_s,
          connect_ms: {p50: (.connects.latency.p50_us / 1000), p99: (.connects.latency.p99_us / 1000),
                       max: (.connects.latency.max_us / 1000)},
          rss_per_socket: .server.rss_per_connection_bytes, cpu_per_connect_us: .server.cpu_per_connect_us}'
  echo "node refused: $(curl -s "http://127.0.0.1:$NODE_PORT/metrics" | grep -E '^wsgate_handshakes_refused_total' | grep -v ' 0$' | tr '\n' ' ')"
  kill "$NODE_PID"
  wait "$NODE_PID" 2>/dev/null || true
  redis-cli -p "$REDIS_PORT" FLUSHALL >/dev/null
}

storm unlimited
storm capped WSGATE_MAX_CONNECTIONS="$MAX_CONNECTIONS"
storm rate-limited WSGATE_HANDSHAKES_PER_IP="$PER_IP" WSGATE_HANDSHAKE_BURST_PER_IP="$BURST" \
  WSGATE_MAX_CONNECTIONS="$MAX_CONNECTIONS"
