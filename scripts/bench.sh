#!/usr/bin/env bash
# Write throughput of an embedded 3-node group (sync on). Not part of CI. Flags go to the bench:
#   scripts/bench.sh --writers 32 --seconds 10 --value-bytes 100
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
cargo run --quiet --example bench_writes -- "$@"
