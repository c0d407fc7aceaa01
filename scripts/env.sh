# Sourced by the scripts: one build plan for every build (one target dir, one profile).
# Scripts build without `-p <crate>`: cargo then resolves features for the whole workspace, so
# RocksDB's build dependencies get one feature set and RocksDB is compiled once (`-p scalestore`
# alone drops features the server's build dependencies add, and compiles RocksDB again).
# RocksDB is compiled once per machine into this target dir, outside the clone.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/scalestore/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# The virtualenv the Python package is built and tested in (scripts/setup.sh --python makes it).
export SCALESTORE_VENV="${SCALESTORE_VENV:-$HOME/.cache/scalestore/venv}"
