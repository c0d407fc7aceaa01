#!/usr/bin/env bash
# Shard scaling: write throughput, CPU per write and fsyncs per write at 1, 2, 4, 8 and 16
# shards, for an embedded cluster (3 nodes in this process) and for 3 `scalestore-server`
# processes on 127.0.0.1 (R=3, fsync on, 64 writers, 100 B values, same total concurrency at
# every point). Writes docs/scaling.json and plots docs/scaling.png. Then the idle cost: 3
# server processes with 8, 64 and 256 shards and no requests at all, CPU (% of one core, all
# three processes together) and RSS per process over --idle-seconds, once groups have had
# time to fall asleep, what waking costs (the first write to each sleeping shard against a
# write to it awake: server/examples/wake_latency.rs), and failover while asleep (kill -9 of a
# node: time until the other two lead every group). Not part of CI.
#
#   scripts/bench-scaling.sh [--duration S] [--shards "1 2 4 8 16"]
#                            [--idle-shards "8 64 256"] [--idle-seconds 30] [--idle-only]
set -euo pipefail
cd "$(dirname "$0")/.."
duration=8 shard_counts="1 2 4 8 16" idle_counts="8 64 256" idle_seconds=30 idle_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --shards) shard_counts=$2; shift 2 ;;
    --idle-shards) idle_counts=$2; shift 2 ;;
    --idle-seconds) idle_seconds=$2; shift 2 ;;
    --idle-only) idle_only=1; shift ;;
    *) echo "bench-scaling: unknown flag $1" >&2; exit 64 ;;
  esac
done
scripts/setup.sh --python
. scripts/env.sh
[ -n "${BENCH_BIN:-}" ] || cargo build --quiet --bins --examples
bin="${BENCH_BIN:-$CARGO_TARGET_DIR/debug}"
dir=$(mktemp -d)
pids=()
stop_servers() {
  [ "${#pids[@]}" -gt 0 ] && kill -TERM "${pids[@]}" 2>/dev/null
  wait 2>/dev/null || true
  pids=()
}
trap 'stop_servers; rm -rf "$dir"' EXIT
# CPU ticks (user + system) of the given processes, summed.
cpu_ticks() {
  local total=0 pid
  for pid in "$@"; do
    total=$(( total + $(awk '{print $14 + $15}' "/proc/$pid/stat") ))
  done
  echo "$total"
}
# A metric of one idle-cluster node (its Prometheus endpoint), 0 when it does not answer.
metric() {
  curl -s -m 1 "127.0.0.1:752$1/metrics" | awk -v m="$2" '$1 == m {v = $2} END {print v + 0}'
}
# Failover while idle: once every group is asleep again, kill -9 node 1 and time until nodes 2
# and 3 lead every group between them (their scalestore_leaders_held, polled every 20 ms).
failover() {
  sleep 5
  local total moved started now led
  moved=$(metric 1 scalestore_leaders_held)
  total=$(( moved + $(metric 2 scalestore_leaders_held) + $(metric 3 scalestore_leaders_held) ))
  kill -9 "${pids[0]}"
  started=$(date +%s%N)
  wait "${pids[0]}" 2> /dev/null || true
  while :; do
    led=$(( $(metric 2 scalestore_leaders_held) + $(metric 3 scalestore_leaders_held) ))
    now=$(date +%s%N)
    [ "$led" -ge "$total" ] && break
    if [ $(( now - started )) -gt 30000000000 ]; then
      echo "    failover: only $led of $total groups led by nodes 2 and 3 after 30 s"
      return
    fi
    sleep 0.02
  done
  echo "    failover: kill -9 of node 1 (leading $moved of $total groups, asleep):" \
    "all led by nodes 2 and 3 after $(( (now - started) / 1000000 )) ms"
}
idle() {
  local n=$1 i members=1=127.0.0.1:7321,2=127.0.0.1:7322,3=127.0.0.1:7323
  for i in 1 2 3; do
    "$bin/scalestore-server" --id "$i" --listen "127.0.0.1:732$i" --data-dir "$dir/idle-$n-$i" \
      --initial-cluster "$members" --shards "$n" --metrics-listen "127.0.0.1:752$i" \
      2> "$dir/idle-$n-$i.log" &
    pids+=($!)
  done
  wait_until_serving "$bin" 127.0.0.1:7321,127.0.0.1:7322,127.0.0.1:7323
  # Elections, the first map and leader balancing settle; idle groups fall asleep.
  sleep 15
  local hz before after rss
  hz=$(getconf CLK_TCK)
  before=$(cpu_ticks "${pids[@]}")
  sleep "$idle_seconds"
  after=$(cpu_ticks "${pids[@]}")
  rss=$(for i in "${pids[@]}"; do awk '/VmRSS/ {printf "%d ", $2 / 1024}' "/proc/$i/status"; done)
  printf '%8s %14s %22s\n' "$n" \
    "$(awk -v t=$(( after - before )) -v hz="$hz" -v s="$idle_seconds" 'BEGIN {printf "%.1f", 100 * t / hz / s}')" \
    "$rss"
  # The first write to each (sleeping) shard against one to the same shard awake.
  "$bin/examples/wake_latency" --endpoints 127.0.0.1:7321,127.0.0.1:7322,127.0.0.1:7323 \
    --settle-seconds 5 | sed 's/^/    /'
  failover
  stop_servers
  rm -rf "$dir/idle-$n-"*
}
if [ "$idle_only" = 1 ]; then
  echo "  shards  cpu % of 1 core  rss MiB (per process)"
  for n in $idle_counts; do idle "$n"; done
  exit 0
fi
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
echo "idle: 3 server processes, no requests, ${idle_seconds} s"
echo "  shards  cpu % of 1 core  rss MiB (per process)"
for n in $idle_counts; do idle "$n"; done
