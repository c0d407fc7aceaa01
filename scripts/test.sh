#!/usr/bin/env bash
# Runs every test of the project, then every command the README shows, briefly, so the README
# cannot rot.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
cargo test --workspace --all-targets "$@"

echo "== README commands"
# The main job and the CLI examples, as printed.
dev_log=$(mktemp)
scripts/dev.sh > "$dev_log" 2>&1 &
dev_pid=$!
for _ in $(seq 1 300); do
  grep -q "^endpoints:" "$dev_log" && break
  kill -0 "$dev_pid" 2>/dev/null || { cat "$dev_log"; exit 1; }
  sleep 1
done
grep -q "^endpoints:" "$dev_log" || { cat "$dev_log"; exit 1; }
scalestore=$HOME/.cargo/bin/scalestore
"$scalestore" put greeting hello
test "$("$scalestore" get greeting)" = hello
"$scalestore" append greeting ", world"
"$scalestore" scan --prefix greet
"$scalestore" status
"$scalestore" --json get greeting
if "$scalestore" get no-such-key; then echo "a missing key must exit 1" >&2; exit 1; fi
kill -TERM "$dev_pid"
wait "$dev_pid"
rm -f "$dev_log"
scripts/demo.sh
scripts/bench.sh --seconds 1 --writers 4
history_file=$(mktemp --suffix=.jsonl)
SOAK_DUMP="$history_file" scripts/soak.sh --nemesis CrashAll --seed 1 --seconds 0 --run-seconds 1
cargo run --quiet -p scalestore --example check_history -- "$history_file"
rm -f "$history_file"
echo "README commands: ok"
