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
SECRET=fanout-secret-0123456789abcdef0123456789
source loadtest/bench/lib.sh
build_binaries
start_redis
start_node p; P=$NODE_PID; P_PORT=$NODE_PORT
start_node d WSGATE_HISTORY_NAMESPACES=org; D=$NODE_PID; D_PORT=$NODE_PORT
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
