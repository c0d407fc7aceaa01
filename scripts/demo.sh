#!/usr/bin/env bash
# The main job: start an embedded 3-node cluster, write and read, stop it, reopen it from its
# data dir and check the data is intact. Pass a directory to keep the cluster's data there.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
cargo run --quiet --example embedded_cluster -- "$@"
