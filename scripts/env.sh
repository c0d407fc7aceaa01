# Sourced by the scripts: one build plan for every build (one target dir, one profile).
# RocksDB is compiled once per machine into this target dir, outside the clone.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/scalestore/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
