#!/usr/bin/env bash
# The fault suite for as long as asked (not part of CI):
#   scripts/soak.sh --seconds 3600          every nemesis in turn, fresh seeds
#   scripts/soak.sh --nemesis CrashAll --seed 7 --seconds 0   replay one run
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
cargo run --quiet --example soak -- "$@"
