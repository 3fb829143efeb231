#!/usr/bin/env bash
# The durable soak: a Redis and two gateway nodes of its own, then the load
# tester's soak scenario (resuming sockets churning while durable events
# flow), with both nodes' RSS sampled. Bounded: it stops by itself.
#
#   loadtest/bench/soak.sh [seconds] [sockets] [rate] [churn-rate]
#
# Writes the report to soak.report.md (or $OUT) and prints the summary.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${1:-1800}
SOCKETS=${2:-1000}
RATE=${3:-50}
CHURN=${4:-10}
OUT=${OUT:-soak.report.md}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
REDIS_PORT=$(free_port); A_PORT=$(free_port); B_PORT=$(free_port)
DIR=$(mktemp -d)
SECRET=soak-secret-0123456789abcdef0123456789
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
    WSGATE_HISTORY_NAMESPACES=org,user WSGATE_LOG=warn WSGATE_NODE_ID=$2 "$WSGATE" >"$DIR/$2.log" 2>&1 &
}
node "$A_PORT" a; A=$!
node "$B_PORT" b; B=$!
for port in "$A_PORT" "$B_PORT"; do
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/ready")" = 200 ]; do sleep 0.1; done
done
"$LT" soak --url "ws://127.0.0.1:$A_PORT" --url "ws://127.0.0.1:$B_PORT" --secret "$SECRET" \
  --redis-url "redis://127.0.0.1:$REDIS_PORT" --sockets "$SOCKETS" --rate "$RATE" --churn-rate "$CHURN" \
  --duration "$DURATION" --timeout $((DURATION + 300)) --settle 30 --away 2 --rss-every 30 --server-pid "$A" --server-pid "$B" --quiet --out "$OUT"
