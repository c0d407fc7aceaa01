#!/usr/bin/env bash
# Runs every test of the project.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
cargo test --workspace --all-targets "$@"
