#!/usr/bin/env bash
# The main job: build the server and CLI (into the shared target dir; RocksDB compiled once per
# machine), install `scalestore` and `scalestore-server` into ~/.cargo/bin, and run a local
# 3-node cluster on 127.0.0.1:7001-7003 until Ctrl-C. Arguments go to `scalestore dev`
# (e.g. --data-dir DIR to keep the data, --nodes 5, --shards 16).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
cargo install --quiet --debug --locked --force --path server
exec "$HOME/.cargo/bin/scalestore" dev "$@"
