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
SECRET=soak-secret-0123456789abcdef0123456789
source loadtest/bench/lib.sh
build_binaries
start_redis
start_node a WSGATE_HISTORY_NAMESPACES=org,user; A=$NODE_PID; A_PORT=$NODE_PORT
start_node b WSGATE_HISTORY_NAMESPACES=org,user; B=$NODE_PID; B_PORT=$NODE_PORT
"$LT" soak --url "ws://127.0.0.1:$A_PORT" --url "ws://127.0.0.1:$B_PORT" --secret "$SECRET" \
  --redis-url "redis://127.0.0.1:$REDIS_PORT" --sockets "$SOCKETS" --rate "$RATE" --churn-rate "$CHURN" \
  --duration "$DURATION" --timeout $((DURATION + 300)) --settle 30 --away 2 --rss-every 30 --server-pid "$A" --server-pid "$B" --quiet --out "$OUT"
