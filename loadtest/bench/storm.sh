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
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
REDIS_PORT=$(free_port); A_PORT=$(free_port); B_PORT=$(free_port)
DIR=$(mktemp -d)
SECRET=storm-secret-0123456789abcdef0123456789
cleanup() { kill "${A:-}" "${B:-}" "${REDIS:-}" 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT

WSGATE=${WSGATE:-target/release/wsgate}
LT=${LT:-target/release/wsgate-loadtest}
[ -x "$WSGATE" ] || cargo build --release --bin wsgate
[ -x "$LT" ] || cargo build --release -p wsgate-loadtest --bin wsgate-loadtest

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$DIR" >/dev/null &
REDIS=$!
until redis-cli -p "$REDIS_PORT" PING >/dev/null 2>&1; do sleep 0.05; done
node() {
  WSGATE_JWT_SECRET=$SECRET WSGATE_LISTEN=127.0.0.1:$1 WSGATE_REDIS_URL=redis://127.0.0.1:$REDIS_PORT \
    WSGATE_HISTORY_NAMESPACES=org,user WSGATE_DRAIN_S=$DRAIN_S WSGATE_LOG=warn WSGATE_NODE_ID=$2 \
    "$WSGATE" >"$DIR/$2.log" 2>&1 &
}
node "$A_PORT" a; A=$!
node "$B_PORT" b; B=$!
for port in "$A_PORT" "$B_PORT"; do
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/ready")" = 200 ]; do sleep 0.1; done
done
status=0
"$LT" storm --url "ws://127.0.0.1:$A_PORT" --url "ws://127.0.0.1:$B_PORT" --secret "$SECRET" \
  --redis-url "redis://127.0.0.1:$REDIS_PORT" --sockets "$SOCKETS" --rate "$RATE" --warmup 5 \
  --duration $((DRAIN_S + 30)) --away 1 --drain-pid "$A" --server-pid "$B" --quiet --out "$OUT" || status=$?
echo "node B's recovery reads (from=node: its own window; from=broker: a Redis read):"
curl -s "http://127.0.0.1:$B_PORT/metrics" | grep -E '^wsgate_(recovery_reads|recoveries|events_recovered)_total'
echo "Redis commands: $(redis-cli -p "$REDIS_PORT" INFO commandstats | grep -E 'cmdstat_(fcall|publish)' | tr '\r\n' ' ')"
exit $status
