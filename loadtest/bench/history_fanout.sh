#!/usr/bin/env bash
# Gateway CPU per delivery with history against without, in the same run:
# two nodes on one Redis, node P without history (PUBLISH), node D with the
# org room durable (FCALL wsgate_publish); the same fan-out runs against
# each in turn, for a few rounds. Prints the load tester's JSON lines and
# the per-round ratio D/P.
#
#   loadtest/bench/history_fanout.sh [sockets] [events] [rate] [rounds]
set -euo pipefail
cd "$(dirname "$0")/../.."
SOCKETS=${1:-5000}
EVENTS=${2:-400}
RATE=${3:-500}
ROUNDS=${4:-3}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
REDIS_PORT=$(free_port); P_PORT=$(free_port); D_PORT=$(free_port)
DIR=$(mktemp -d)
SECRET=fanout-secret-0123456789abcdef0123456789
cleanup() { kill "${P:-}" "${D:-}" "${REDIS:-}" 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
WSGATE=${WSGATE:-target/release/wsgate}
LT=${LT:-target/release/wsgate-loadtest}
[ -x "$WSGATE" ] || cargo build --release --bin wsgate
[ -x "$LT" ] || cargo build --release -p wsgate-loadtest --bin wsgate-loadtest
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$DIR" >/dev/null &
REDIS=$!
until redis-cli -p "$REDIS_PORT" PING >/dev/null 2>&1; do sleep 0.05; done
WSGATE_JWT_SECRET=$SECRET WSGATE_LISTEN=127.0.0.1:$P_PORT WSGATE_REDIS_URL=redis://127.0.0.1:$REDIS_PORT \
  WSGATE_LOG=warn "$WSGATE" >/dev/null 2>&1 &
P=$!
WSGATE_JWT_SECRET=$SECRET WSGATE_LISTEN=127.0.0.1:$D_PORT WSGATE_REDIS_URL=redis://127.0.0.1:$REDIS_PORT \
  WSGATE_HISTORY_NAMESPACES=org WSGATE_LOG=warn "$WSGATE" >/dev/null 2>&1 &
D=$!
for port in "$P_PORT" "$D_PORT"; do
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/ready")" = 200 ]; do sleep 0.1; done
done
run() { # url pid [--fcall]: CPU per delivery in microseconds
  "$LT" fanout --url "$1" --server-pid "$2" --secret "$SECRET" --redis-url "redis://127.0.0.1:$REDIS_PORT" \
    --sockets "$SOCKETS" --events "$EVENTS" --rate "$RATE" --quiet "${@:3}" | tail -1 |
    python3 -c 'import json,sys; r=json.load(sys.stdin); s=r["server"]; d=r["delivery"]; print(s["cpu_per_delivery_us"], d["lost"], d["duplicates"])'
}
for round in $(seq 1 "$ROUNDS"); do
  read -r plain plain_lost plain_dup < <(run "ws://127.0.0.1:$P_PORT" "$P")
  read -r durable durable_lost durable_dup < <(run "ws://127.0.0.1:$D_PORT" "$D" --fcall)
  python3 -c "print(f'round $round: without history {$plain:.3f} us/delivery (lost $plain_lost, dup $plain_dup), with history {$durable:.3f} us/delivery (lost $durable_lost, dup $durable_dup), ratio {$durable/$plain:.2f}')"
done
