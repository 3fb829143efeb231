#!/usr/bin/env bash
# The reconnect storm: N sockets on node A of two (own Redis, durable org and
# user rooms), durable events at a steady rate; A is drained (SIGTERM) and
# every socket resumes on node B. Reports the time from the SIGTERM to the
# last socket recovered, loss, and node B's CPU per recovered event; then
# node B's recovery reads, split by who answered them (its window or Redis).
#
#   loadtest/bench/storm.sh [sockets] [rate] [drain_s]
set -euo pipefail
cd "$(dirname "$0")/../.."
SOCKETS=${1:-15000}
RATE=${2:-100}
DRAIN_S=${3:-10}
OUT=${OUT:-storm.report.md}
SECRET=storm-secret-0123456789abcdef0123456789
source loadtest/bench/lib.sh
build_binaries
start_redis
start_node a WSGATE_HISTORY_NAMESPACES=org,user WSGATE_DRAIN_S="$DRAIN_S"; A=$NODE_PID; A_PORT=$NODE_PORT
start_node b WSGATE_HISTORY_NAMESPACES=org,user WSGATE_DRAIN_S="$DRAIN_S"; B=$NODE_PID; B_PORT=$NODE_PORT
status=0
"$LT" storm --url "ws://127.0.0.1:$A_PORT" --url "ws://127.0.0.1:$B_PORT" --secret "$SECRET" \
  --redis-url "redis://127.0.0.1:$REDIS_PORT" --sockets "$SOCKETS" --rate "$RATE" --warmup 5 \
  --duration $((DRAIN_S + 30)) --away 1 --drain-pid "$A" --server-pid "$B" --quiet --out "$OUT" || status=$?
echo "node B's recovery reads (from=node: its own window; from=broker: a Redis read):"
curl -s "http://127.0.0.1:$B_PORT/metrics" | grep -E '^wsgate_(recovery_reads|recoveries|events_recovered)_total'
echo "Redis commands: $(redis-cli -p "$REDIS_PORT" INFO commandstats | grep -E 'cmdstat_(fcall|publish)' | tr '\r\n' ' ')"
exit $status
