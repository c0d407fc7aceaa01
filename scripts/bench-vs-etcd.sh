#!/usr/bin/env bash
# ScaleStore and etcd side by side, same machine, same run, same client code: three
# `scalestore-server` processes (8 shards, R=3, fsync on) and three etcd 3.4 members (fsync on),
# all on 127.0.0.1, each driven by `scalestore bench` with the same workloads, key space, value
# size and concurrency. Installs etcd (Debian's etcd-server) if missing. Not part of CI.
#
#   scripts/bench-vs-etcd.sh [--duration S] [--warmup S] [--concurrency N] [--clients N]
#
# Prints one row per workload; each row ends with ScaleStore's ops/s over etcd's as `N.NNx`.
# The first row is the pure-write workload. Raw reports are kept in $BENCH_OUT (default: a
# temporary dir, printed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
duration=10 warmup=2 concurrency=64 clients=3 shards=8
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --concurrency) concurrency=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --shards) shards=$2; shift 2 ;;
    *) echo "bench-vs-etcd: unknown flag $1" >&2; exit 64 ;;
  esac
done
scripts/setup.sh --bench
. scripts/env.sh
[ -n "${BENCH_BIN:-}" ] || cargo build --quiet --bins
bin="${BENCH_BIN:-$CARGO_TARGET_DIR/debug}"
dir=$(mktemp -d)
out="${BENCH_OUT:-$dir/reports}"
mkdir -p "$out"
pids=()
cleanup() {
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$dir/etcd-"* "$dir/node-"*
}
trap cleanup EXIT

# etcd: client 23791-3, peer 23801-3, metrics 23811-3.
etcd_cluster=e1=http://127.0.0.1:23801,e2=http://127.0.0.1:23802,e3=http://127.0.0.1:23803
for i in 1 2 3; do
  etcd --name "e$i" --data-dir "$dir/etcd-$i" \
    --listen-client-urls "http://127.0.0.1:2379$i" --advertise-client-urls "http://127.0.0.1:2379$i" \
    --listen-peer-urls "http://127.0.0.1:2380$i" --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
    --listen-metrics-urls "http://127.0.0.1:2381$i" \
    --initial-cluster "$etcd_cluster" --initial-cluster-state new --initial-cluster-token bench \
    --logger zap --log-level error > "$dir/etcd-$i.log" 2>&1 &
  pids+=($!)
done
# ScaleStore: gRPC 7311-3, metrics 7411-3.
members=1=127.0.0.1:7311,2=127.0.0.1:7312,3=127.0.0.1:7313
for i in 1 2 3; do
  "$bin/scalestore-server" --id "$i" --listen "127.0.0.1:731$i" --data-dir "$dir/node-$i" \
    --initial-cluster "$members" --shards "$shards" --metrics-listen "127.0.0.1:741$i" \
    2> "$dir/node-$i.log" &
  pids+=($!)
done
ss_endpoints=127.0.0.1:7311,127.0.0.1:7312,127.0.0.1:7313
ss_metrics=127.0.0.1:7411,127.0.0.1:7412,127.0.0.1:7413
etcd_endpoints=127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793
etcd_metrics=127.0.0.1:23811,127.0.0.1:23812,127.0.0.1:23813

# Ready: ScaleStore once a linearizable read answers; etcd once a write commits.
wait_until_serving "$bin" "$ss_endpoints" || { echo "logs in $dir" >&2; trap - EXIT; exit 1; }
ready=false
for _ in $(seq 1 120); do
  if ETCDCTL_API=3 etcdctl --endpoints "$etcd_endpoints" put bench-ready 1 >/dev/null 2>&1; then
    ready=true
    break
  fi
  sleep 1
done
$ready || { echo "bench-vs-etcd: etcd did not come up; logs in $dir" >&2; trap - EXIT; exit 1; }

common=(--duration "$duration" --warmup "$warmup" --concurrency "$concurrency" --clients "$clients" --json --quiet)
# name | scalestore bench flags (the same for etcd)
workloads=(
  "write|--workload write"
  "read (linearizable)|--workload read --consistency linearizable"
  "read (stale / serializable)|--workload read --consistency stale"
  "ycsb-a (50% reads)|--workload ycsb-a"
  "ycsb-b (95% reads)|--workload ycsb-b"
)
echo "ScaleStore: 3 scalestore-server processes, $shards shards, R=3, fsync on; etcd $(etcd --version | head -1 | awk '{print $3}'): 3 members, fsync on."
echo "Both on 127.0.0.1, driven by \`scalestore bench\`: $concurrency requests in flight over $clients connections, 10000 keys of 16 B, 100 B values, ${duration} s after ${warmup} s warm-up."
i=0
for w in "${workloads[@]}"; do
  name=${w%%|*}
  read -r -a flags <<< "${w#*|}"
  i=$((i + 1))
  echo "[bench-vs-etcd] $name: ScaleStore" >&2
  "$bin/scalestore" --endpoints "$ss_endpoints" bench --target scalestore --metrics "$ss_metrics" \
    "${flags[@]}" "${common[@]}" > "$out/$i-scalestore.json"
  echo "[bench-vs-etcd] $name: etcd" >&2
  "$bin/scalestore" --endpoints "$etcd_endpoints" bench --target etcd --metrics "$etcd_metrics" \
    "${flags[@]}" "${common[@]}" > "$out/$i-etcd.json"
  echo "$name" > "$out/$i-name"
done
python3 scripts/bench_table.py "$out"
echo "reports: $out"
