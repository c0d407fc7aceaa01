# Sourced by the scripts: one build plan for every build (one target dir, one profile).
# RocksDB is compiled once per machine into this target dir, outside the clone.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/scalestore/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# The virtualenv the Python package is built and tested in (scripts/setup.sh --python makes it).
export SCALESTORE_VENV="${SCALESTORE_VENV:-$HOME/.cache/scalestore/venv}"
