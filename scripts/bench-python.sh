#!/usr/bin/env bash
# Put/get throughput from Python (one thread, threads, asyncio) next to the Rust client on the
# same embedded cluster. Not part of CI. Flags go to examples/python_bench.py:
#   scripts/bench-python.sh --seconds 5 --threads 8 --in-flight 64
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --python
. scripts/env.sh
"$SCALESTORE_VENV/bin/pip" install -q ./python
exec "$SCALESTORE_VENV/bin/python" examples/python_bench.py "$@"
