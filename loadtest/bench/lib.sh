# Shared by the bench scripts: a Redis and gateway nodes of their own, on
# free ports, stopped when the script exits. Source it after `cd` to the
# repository root; set WSGATE/LT to use other binaries.
WSGATE=${WSGATE:-target/release/wsgate}
LT=${LT:-target/release/wsgate-loadtest}
BENCH_DIR=$(mktemp -d)
BENCH_PIDS=()
trap 'kill "${BENCH_PIDS[@]}" 2>/dev/null || true; rm -rf "$BENCH_DIR"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

build_binaries() {
  [ -x "$WSGATE" ] || cargo build --release --bin wsgate
  [ -x "$LT" ] || cargo build --release -p wsgate-loadtest --bin wsgate-loadtest
}

# start_redis: sets REDIS_PORT and REDIS_PID.
start_redis() {
  REDIS_PORT=$(free_port)
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$BENCH_DIR" >/dev/null &
  REDIS_PID=$!
  BENCH_PIDS+=("$REDIS_PID")
  until redis-cli -p "$REDIS_PORT" PING >/dev/null 2>&1; do sleep 0.05; done
}

# start_node NAME [VAR=value ...]: a node on the Redis; sets NODE_PORT and
# NODE_PID, and returns once it is ready.
start_node() {
  local name=$1
  shift
  NODE_PORT=$(free_port)
  env WSGATE_JWT_SECRET="$SECRET" WSGATE_LISTEN="127.0.0.1:$NODE_PORT" \
    WSGATE_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" WSGATE_LOG=warn WSGATE_NODE_ID="$name" "$@" \
    "$WSGATE" >"$BENCH_DIR/$name.log" 2>&1 &
  NODE_PID=$!
  BENCH_PIDS+=("$NODE_PID")
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$NODE_PORT/ready")" = 200 ]; do sleep 0.1; done
}
