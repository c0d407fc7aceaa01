#!/usr/bin/env bash
# Runs every test of the project, then every command the README shows, briefly, so the README
# cannot rot.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --python --node
. scripts/env.sh
cargo test --workspace --all-targets "$@"

echo "== Python package"
# Built by maturin into the same target dir and profile as above (RocksDB is not compiled again).
"$SCALESTORE_VENV/bin/pip" install -q ./python
SCALESTORE_SERVER_BIN="$CARGO_TARGET_DIR/debug/scalestore-server" \
  "$SCALESTORE_VENV/bin/python" -m pytest -q -p no:cacheprovider python/tests
"$SCALESTORE_VENV/bin/python" -m mypy.stubtest scalestore._scalestore
"$SCALESTORE_VENV/bin/python" -m mypy --strict python/tests/typecheck_consumer.py
"$SCALESTORE_VENV/bin/python" examples/run_notebook.py examples/python-experiment.ipynb

echo "== Node package"
# As a user installs it: `npm install /path/to/repo/node` from another directory builds the
# addon (napi-rs, same target dir and profile: RocksDB is not compiled again).
repo=$(pwd)
consumer=$(mktemp -d)
(cd "$consumer" && npm init -y >/dev/null && npm install --no-audit --no-fund "$repo/node" >/dev/null)
cp examples/node-quickstart.mjs "$consumer/"
(cd "$consumer" && node node-quickstart.mjs)
rm -rf "$consumer"
(cd node && npm ci --no-audit --no-fund >/dev/null)
SCALESTORE_SERVER_BIN="$CARGO_TARGET_DIR/debug/scalestore-server" npm --prefix node test
npm --prefix node run typecheck

echo "== Packages, installed with no cargo on PATH"
scripts/package.sh --install-check

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
"$scalestore" bench --workload ycsb-a --duration 1 --warmup 0
kill -TERM "$dev_pid"
wait "$dev_pid"
rm -f "$dev_log"
scripts/demo.sh
scripts/bench.sh --seconds 1 --writers 4
history_file=$(mktemp --suffix=.jsonl)
SOAK_DUMP="$history_file" scripts/soak.sh --nemesis CrashAll --seed 1 --seconds 0 --run-seconds 1
cargo run --quiet --example check_history -- "$history_file"
rm -f "$history_file"
digest=$(scripts/soak.sh --deterministic --nemesis CrashAll --seed 7 --run-seconds 1 2>/dev/null | tail -1)
case "$digest" in digest:\ *) ;; *) echo "soak --deterministic must end with its digest, not: $digest" >&2; exit 1 ;; esac
echo "README commands: ok"
