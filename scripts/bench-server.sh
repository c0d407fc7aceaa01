#!/usr/bin/env bash
# Write and linearizable-read throughput of 3 server processes on loopback (8 shards), through
# the Rust gRPC client: 64 requests in flight, 100 B values. Not part of CI.
#   scripts/bench-server.sh [--seconds N] [--concurrency N]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
cargo build --quiet -p scalestore-server --bins --examples
bin="$CARGO_TARGET_DIR/debug"
log=$(mktemp)
"$bin/scalestore" dev --nodes 3 --shards 8 --first-port 7301 > "$log" 2>&1 &
dev=$!
trap 'kill -TERM $dev 2>/dev/null; wait $dev 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 1 120); do grep -q "^endpoints:" "$log" && break; sleep 1; done
grep -q "^endpoints:" "$log" || { cat "$log"; exit 1; }
endpoints=127.0.0.1:7301,127.0.0.1:7302,127.0.0.1:7303
"$bin/examples/bench_grpc" --endpoints "$endpoints" --workload write "$@"
"$bin/examples/bench_grpc" --endpoints "$endpoints" --workload read "$@"
