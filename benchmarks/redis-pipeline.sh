#!/bin/bash
# A launcher for ../shared/bench/systems.sh (LAUNCHER_<SYSTEM>=this script): wsqueue on a
# Redis store with MSGQUEUES msgqueue daemons (default 2) sharing one queue. The publisher
# (18081) links to the first msgqueue and the subscriber (18082) to the last, so every
# message crosses from one msgqueue daemon to another through Redis.
#   benchmarks/redis-pipeline.sh start|stop
# Env: WORK, CERTS (as systems.sh), WSQ_BIN (folder with twistd), REDIS_URL (default
# redis://127.0.0.1:16379/0; the caller runs that Redis), MSGQUEUES.
# Example, one msgqueue against two, interleaved, 3 runs each (compare.sh restarts the
# daemons before every run):
#   redis-server --port 16379 --save '' --appendonly yes --appendfsync everysec --daemonize yes
#   for r in 1 2 3; do for n in 1 2; do
#     MSGQUEUES=$n LAUNCHER_wsqredis=$PWD/benchmarks/redis-pipeline.sh WORK=/tmp/wsq-bench-$n-$r \
#       SYSTEMS=wsqredis RUNS=1 SCEN="S1w S2 S3" WSQ_BIN=$PWD/.venv/bin ../shared/bench/compare.sh
#   done; done
set -euo pipefail
WORK=${WORK:-/tmp/wsq-bench}; CERTS=${CERTS:-$WORK/certs}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:16379/0}; MSGQUEUES=${MSGQUEUES:-2}
W=$WORK/run-redis-pipeline; tw=${WSQ_BIN:+$WSQ_BIN/}twistd

waitready() { # ready-file pid log
  for _ in $(seq 1 300); do
    grep -q '"ready"' "$1" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { echo "daemon exited; its log:" >&2; tail -20 "$3" >&2; return 1; }
    sleep 0.1
  done
  echo "not ready within 30 s: $3" >&2; return 1
}

start() {
  rm -rf "$W"; mkdir -p "$W"; cd "$W"
  local pids=() i port queues=()
  for i in $(seq 1 "$MSGQUEUES"); do
    port=$((18080 + 10 * (i - 1))); queues+=("wss://localhost:$port")
    "$tw" -n --pidfile= --logfile="$W/msgqueue$i.log" wsqueue-msgqueue --port "$port" --cert-dir "$CERTS" \
      --store "$REDIS_URL" --ready-file "$W/msgqueue$i.ready" >"$W/msgqueue$i.out" 2>&1 & pids+=($!)
    waitready "$W/msgqueue$i.ready" "${pids[-1]}" "$W/msgqueue$i.log" || { kill "${pids[@]}"; return 1; }
  done
  "$tw" -n --pidfile= --logfile="$W/publisher.log" wsqueue-publisher --port 18081 --cert-dir "$CERTS" \
    --queue "${queues[0]}" --ready-file "$W/publisher.ready" >"$W/publisher.out" 2>&1 & pids+=($!)
  "$tw" -n --pidfile= --logfile="$W/subscriber.log" wsqueue-subscriber --port 18082 --cert-dir "$CERTS" \
    --queue "${queues[-1]}" --ready-file "$W/subscriber.ready" >"$W/subscriber.out" 2>&1 & pids+=($!)
  waitready "$W/publisher.ready" "${pids[-2]}" "$W/publisher.log" || { kill "${pids[@]}"; return 1; }
  waitready "$W/subscriber.ready" "${pids[-1]}" "$W/subscriber.log" || { kill "${pids[@]}"; return 1; }
  (IFS=,; echo "${pids[*]}")
}

case "${1:-}" in
start) start ;;
stop) ;;  # systems.sh kills the PIDs start printed
*) sed -n 2,14p "$0"; exit 2 ;;
esac
