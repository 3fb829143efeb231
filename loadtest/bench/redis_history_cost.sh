#!/usr/bin/env bash
# Redis CPU per durable event (FCALL wsgate_publish, as backends call it, and
# wsgate_append, as the gateway does: HGET + HINCRBY + EXPIRE + XADD + PUBLISH
# in one function call) against a plain PUBLISH of the same payload, in the
# same run, on a Redis of its own. One subscriber (a
# redis-cli SUBSCRIBE) receives both, so both pay the same fan-out.
#
#   loadtest/bench/redis_history_cost.sh [events] [rounds] [subscribers]
#
# subscribers (default 1): how many connections SUBSCRIBE to the room, as
# that many gateway nodes serving it would; both commands pay each one.
# WSGATE_BIN picks the gateway binary (default target/release/wsgate).
#
# Prints one line per round and the median ratio. Needs redis-server,
# redis-cli, redis-benchmark and a built gateway (target/release/wsgate),
# which loads the Function library into this Redis.
set -euo pipefail
cd "$(dirname "$0")/../.."
EVENTS=${1:-200000}
ROUNDS=${2:-3}
SUBSCRIBERS=${3:-1}
WSGATE_BIN=${WSGATE_BIN:-target/release/wsgate}
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
WS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
DIR=$(mktemp -d)
SUBS=()
cleanup() { kill "${SUBS[@]}" "${REDIS:-}" "${NODE:-}" 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT

[ -x "$WSGATE_BIN" ] || cargo build --release --bin wsgate
redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$DIR" >/dev/null &
REDIS=$!
until redis-cli -p "$PORT" PING >/dev/null 2>&1; do sleep 0.05; done

# A node loads the library on connect; then it is not needed.
WSGATE_JWT_SECRET=redis-history-cost-secret-0123456789 WSGATE_LISTEN=127.0.0.1:$WS_PORT \
  WSGATE_REDIS_URL=redis://127.0.0.1:$PORT WSGATE_HISTORY_NAMESPACES=org WSGATE_LOG=warn \
  "$WSGATE_BIN" >/dev/null &
NODE=$!
until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$WS_PORT/ready")" = 200 ]; do sleep 0.1; done
kill "$NODE"; wait "$NODE" 2>/dev/null || true; NODE=
redis-cli -p "$PORT" FUNCTION LIST LIBRARYNAME wsgate | grep -q wsgate_publish

for _ in $(seq 1 "$SUBSCRIBERS"); do
  redis-cli -p "$PORT" SUBSCRIBE gw:org:bench >/dev/null &
  SUBS+=($!)
done
until [ "$(redis-cli -p "$PORT" PUBSUB NUMSUB gw:org:bench | tail -1)" = "$SUBSCRIBERS" ]; do sleep 0.05; done

PAYLOAD='{"event":"order:updated","data":{"id":7,"status":"shipped","items":[1,2,3],"note":"left at the door"}}'
cpu_ticks() { awk '{print $14 + $15}' "/proc/$REDIS/stat"; }
# $1: commands per round trip (16: pipelined, as a busy client library
# sends; 1: one command per round trip, as a request handler sends).
measure() {
  local pipeline=$1 before after
  shift
  before=$(cpu_ticks)
  redis-benchmark -p "$PORT" -n "$EVENTS" -c 8 -P "$pipeline" -q "$@" >/dev/null
  after=$(cpu_ticks)
  echo $((after - before))
}
TICK_US=$((1000000 / $(getconf CLK_TCK)))
for pipeline in 16 1; do
  ratios=()
  append_ratios=()
  for round in $(seq 1 "$ROUNDS"); do
    plain=$(measure "$pipeline" PUBLISH gw:org:bench "$PAYLOAD")
    durable=$(measure "$pipeline" FCALL wsgate_publish 1 gw:org:bench "$PAYLOAD")
    # wsgate_append: what the gateway's API and client publishes call (no
    # payload check: the gateway has parsed the payload already).
    append=$(measure "$pipeline" FCALL wsgate_append 1 gw:org:bench "$PAYLOAD")
    ratio=$(python3 -c "print(f'{$durable / max($plain, 1):.2f}')")
    append_ratio=$(python3 -c "print(f'{$append / max($plain, 1):.2f}')")
    ratios+=("$ratio")
    append_ratios+=("$append_ratio")
    python3 -c "e, t = $EVENTS, $TICK_US; print(f'pipeline $pipeline, round $round: PUBLISH {$plain*t/e:.2f} us/event, FCALL wsgate_publish {$durable*t/e:.2f} us/event (ratio $ratio), FCALL wsgate_append {$append*t/e:.2f} us/event (ratio $append_ratio)')"
  done
  printf '%s\n' "${ratios[@]}" | sort -n | awk -v p="$pipeline" '{a[NR]=$1} END {print "pipeline " p ": median ratio wsgate_publish/PUBLISH " a[int((NR+1)/2)]}'
  printf '%s\n' "${append_ratios[@]}" | sort -n | awk -v p="$pipeline" '{a[NR]=$1} END {print "pipeline " p ": median ratio wsgate_append/PUBLISH " a[int((NR+1)/2)]}'
done
echo "history kept: $(redis-cli -p "$PORT" XLEN '{gw:org:bench}:h') entries (history.size 1000, MAXLEN ~)"
