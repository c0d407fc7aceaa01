#!/usr/bin/env bash
# Runs every test of the project, then every command the README shows, briefly, so the README
# cannot rot.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
cargo test --workspace --all-targets "$@"

echo "== README commands"
scripts/demo.sh
scripts/bench.sh --seconds 1 --writers 4
history_file=$(mktemp --suffix=.jsonl)
SOAK_DUMP="$history_file" scripts/soak.sh --nemesis CrashAll --seed 1 --seconds 0 --run-seconds 1
cargo run --quiet -p scalestore --example check_history -- "$history_file"
rm -f "$history_file"
echo "README commands: ok"
