# Sourced by the scripts: one build plan for every build (one target dir, one profile).
# Scripts build without `-p <crate>`: cargo then resolves features for the whole workspace, so
# RocksDB's build dependencies get one feature set and RocksDB is compiled once (`-p scalestore`
# alone drops features the server's build dependencies add, and compiles RocksDB again).
# RocksDB is compiled once per machine into this target dir, outside the clone.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/scalestore/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# The virtualenv the Python package is built and tested in (scripts/setup.sh --python makes it).
export SCALESTORE_VENV="${SCALESTORE_VENV:-$HOME/.cache/scalestore/venv}"

# wait_until_serving BIN_DIR ENDPOINTS: returns once a linearizable read answers (a missing key
# exits 1; unreachable exits 2), or fails after 120 s.
wait_until_serving() {
  local code
  for _ in $(seq 1 120); do
    code=0
    "$1/scalestore" --endpoints "$2" --timeout 1 get serving-probe > /dev/null 2>&1 || code=$?
    [ "$code" = 1 ] && return 0
    sleep 1
  done
  echo "the cluster at $2 did not start serving" >&2
  return 1
}
