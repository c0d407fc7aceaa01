#!/usr/bin/env bash
# Shard scaling: write throughput, CPU per write and fsyncs per write at 1, 2, 4, 8 and 16
# shards, for an embedded cluster (3 nodes in this process) and for 3 `scalestore-server`
# processes on 127.0.0.1 (R=3, fsync on, 64 writers, 100 B values, same total concurrency at
# every point). Writes docs/scaling.json and plots docs/scaling.png. Not part of CI.
#
#   scripts/bench-scaling.sh [--duration S] [--shards "1 2 4 8 16"]
set -euo pipefail
cd "$(dirname "$0")/.."
duration=8 shard_counts="1 2 4 8 16"
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --shards) shard_counts=$2; shift 2 ;;
    *) echo "bench-scaling: unknown flag $1" >&2; exit 64 ;;
  esac
done
scripts/setup.sh --python
. scripts/env.sh
[ -n "${BENCH_BIN:-}" ] || cargo build --quiet --bins
bin="${BENCH_BIN:-$CARGO_TARGET_DIR/debug}"
dir=$(mktemp -d)
pids=()
stop_servers() {
  [ "${#pids[@]}" -gt 0 ] && kill -TERM "${pids[@]}" 2>/dev/null
  wait 2>/dev/null || true
  pids=()
}
trap 'stop_servers; rm -rf "$dir"' EXIT
common=(--workload write --concurrency 64 --clients 3 --duration "$duration" --warmup 2 --json --quiet)
for n in $shard_counts; do
  echo "[bench-scaling] embedded, $n shards" >&2
  "$bin/scalestore" bench --target embedded --shards "$n" "${common[@]}" > "$dir/embedded-$n.json"
  echo "[bench-scaling] 3 processes, $n shards" >&2
  members=1=127.0.0.1:7321,2=127.0.0.1:7322,3=127.0.0.1:7323
  for i in 1 2 3; do
    "$bin/scalestore-server" --id "$i" --listen "127.0.0.1:732$i" --data-dir "$dir/node-$n-$i" \
      --initial-cluster "$members" --shards "$n" --metrics-listen "127.0.0.1:742$i" \
      2> "$dir/node-$n-$i.log" &
    pids+=($!)
  done
  endpoints=127.0.0.1:7321,127.0.0.1:7322,127.0.0.1:7323
  wait_until_serving "$bin" "$endpoints"
  "$bin/scalestore" --endpoints "$endpoints" bench --target scalestore \
    --metrics 127.0.0.1:7421,127.0.0.1:7422,127.0.0.1:7423 "${common[@]}" > "$dir/processes-$n.json"
  stop_servers
  rm -rf "$dir/node-$n-"*
done
"$SCALESTORE_VENV/bin/python" scripts/plot_scaling.py "$dir" docs/scaling.json docs/scaling.png
