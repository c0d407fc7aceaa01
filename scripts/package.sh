#!/usr/bin/env bash
# Builds the packages users install without a compiler, in two flavours, into dist/:
#   full (the embedded cluster, RocksDB inside) and client (remote clusters only: no RocksDB,
#   built without the `embedded` cargo feature):
#   scalestore[-client]-<version>-cp39-abi3-<platform>.whl   Python (maturin; abi3: one wheel
#                                                             for CPython 3.9 and later)
#   scalestore[-client]-<version>.tgz                         npm: JavaScript and types
#   scalestore[-client]-<platform>-<version>.tgz              npm: the prebuilt addon, napi-rs's
#                                                             per-platform layout (an optional
#                                                             dependency of the one above)
# Every build goes into the one target dir (scripts/env.sh): RocksDB is not compiled again, and
# the client flavour never compiles it. Prints each package's size and build time.
#   scripts/package.sh [--install-check]   the check also installs every package, as a user
#                                          would, into fresh directories with no cargo on PATH,
#                                          and runs the quickstarts (CI runs it)
set -euo pipefail
cd "$(dirname "$0")/.."
check=0
[ "${1:-}" = "--install-check" ] && check=1
scripts/setup.sh --python --node
. scripts/env.sh
repo=$(pwd)
dist="$repo/dist"
rm -rf "$dist"
mkdir -p "$dist"
stage=$(mktemp -d)
seconds() { echo $(( $(date +%s) - $1 )); }
size() { du -h "$1" | cut -f1; }
version=$(node -p "require('./node/package.json').version")
suffix=$(node -p "require('./node/lib/platform.js').platformSuffix()")

# build_wheel NAME CARGO_FEATURE_FLAG: the Python package under distribution NAME (the import
# name stays `scalestore`).
build_wheel() {
  local name=$1 client=$2 src=./python started
  started=$(date +%s)
  if [ "$client" = 1 ]; then
    src="$stage/python-$name"
    mkdir -p "$src"
    cp -r python/scalestore python/pyproject.toml python/README.md "$src/"
    sed -i -e "s|^name = \"scalestore\"|name = \"$name\"|" \
      -e "s|^manifest-path = .*|manifest-path = \"$repo/bindings/python/Cargo.toml\"|" \
      -e 's|^features = \["extension-module"\]|features = ["extension-module"]\nno-default-features = true|' \
      "$src/pyproject.toml"
  fi
  "$SCALESTORE_VENV/bin/pip" wheel -q --no-deps -w "$dist" "$src"
  local wheel
  wheel=$(ls "$dist/${name//-/_}"-"$version"-*.whl)
  case "$wheel" in *-abi3-*) ;; *) echo "not an abi3 wheel: $wheel" >&2; exit 1 ;; esac
  echo "built $(basename "$wheel") ($(size "$wheel")) in $(seconds "$started") s"
}

# build_npm NAME CLIENT: the npm package NAME and its addon's per-platform package.
build_npm() {
  local name=$1 client=$2 started platform addon
  started=$(date +%s)
  if [ "$client" = 1 ]; then
    cargo build -q --manifest-path bindings/node/Cargo.toml -p scalestore-node --lib --no-default-features
  else
    cargo build -q --manifest-path bindings/node/Cargo.toml -p scalestore-node --lib
  fi
  platform="$name-$suffix"
  addon="$stage/$platform"
  mkdir -p "$addon"
  cp "$CARGO_TARGET_DIR/debug/libscalestore_node.so" "$addon/scalestore.node"
  # Without debug info, as maturin strips the wheel's library (binutils' strip).
  strip --strip-unneeded "$addon/scalestore.node"
  node - "$addon" "$platform" "$version" <<'JS'
const [dir, name, version] = process.argv.slice(2)
const [, os, cpu, libc] = name.match(/-([a-z0-9]+)-([a-z0-9]+)(?:-(gnu|musl))?$/)
const pkg = { name, version, description: `ScaleStore's prebuilt native addon for ${os}-${cpu}${libc ? '-' + libc : ''}`,
  license: 'Apache-2.0', main: 'scalestore.node', files: ['scalestore.node'], os: [os], cpu: [cpu] }
if (libc) pkg.libc = [libc === 'gnu' ? 'glibc' : 'musl']
require('node:fs').writeFileSync(`${dir}/package.json`, JSON.stringify(pkg, null, 2) + '\n')
JS
  # The main package: no install step (nothing to build), the addon as an optional dependency.
  local main="$stage/$name"
  mkdir -p "$main"
  cp -r node/index.js node/index.d.ts node/lib node/scripts node/package.json "$main/"
  node - "$main" "$name" "$platform" "$version" <<'JS'
const fs = require('node:fs')
const [dir, name, platform, version] = process.argv.slice(2)
const pkg = JSON.parse(fs.readFileSync(`${dir}/package.json`, 'utf8'))
pkg.name = name
delete pkg.scripts.install
delete pkg.devDependencies
pkg.files = pkg.files.filter((f) => f !== 'native/')
pkg.optionalDependencies = { [platform]: version }
fs.writeFileSync(`${dir}/package.json`, JSON.stringify(pkg, null, 2) + '\n')
JS
  (cd "$addon" && npm pack -s --pack-destination "$dist" >/dev/null)
  (cd "$main" && npm pack -s --pack-destination "$dist" >/dev/null)
  echo "built $name-$version.tgz ($(size "$dist/$name-$version.tgz")) and $platform-$version.tgz ($(size "$dist/$platform-$version.tgz")) in $(seconds "$started") s"
}

echo "== wheels"
build_wheel scalestore 0
build_wheel scalestore-client 1
echo "== npm packages"
build_npm scalestore 0
build_npm scalestore-client 1
# The repository's own addon (node/native) stays the full one.
(cd node && npm run -s build >/dev/null)
rm -rf "$stage"

[ "$check" = 1 ] || exit 0

echo "== installed as users install them (no cargo on PATH)"
cargo build -q --bin scalestore-server
server_bin="$CARGO_TARGET_DIR/debug/scalestore-server"
no_cargo_path=$(echo "$PATH" | tr ':' '\n' | grep -v -e '\.cargo/bin' -e '\.rustup' | paste -sd: -)
fresh=$(mktemp -d)
mkdir -p "$fresh/home"
run_fresh() { env -u CARGO_TARGET_DIR -u SCALESTORE_REPO PATH="$no_cargo_path" HOME="$fresh/home" "$@"; }
if run_fresh sh -c 'command -v cargo' >/dev/null; then echo "cargo still on PATH" >&2; exit 1; fi

# A one-node cluster for the client-only packages.
port=$("$SCALESTORE_VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$server_bin" --id 1 --listen "127.0.0.1:$port" --data-dir "$fresh/server" \
  --initial-cluster "1=127.0.0.1:$port" --shards 2 > "$fresh/server.log" 2>&1 &
server_pid=$!
trap 'kill "$server_pid" 2>/dev/null || true; rm -rf "$fresh"' EXIT
export SCALESTORE_ENDPOINTS="127.0.0.1:$port"

for flavour in scalestore scalestore-client; do
  started=$(date +%s)
  "$SCALESTORE_VENV/bin/python" -m venv "$fresh/venv-$flavour"
  run_fresh "$fresh/venv-$flavour/bin/pip" install -q --no-index "$dist/${flavour//-/_}-$version"-*.whl
  echo "pip install of $flavour: $(seconds "$started") s (venv included)"
  started=$(date +%s)
  project="$fresh/project-$flavour"
  mkdir -p "$project"
  platform="$flavour-$suffix-$version.tgz"
  (cd "$project" && run_fresh npm init -y >/dev/null \
    && run_fresh npm install --no-audit --no-fund --offline "$dist/$platform" "$dist/$flavour-$version.tgz" >/dev/null)
  echo "npm install of $flavour: $(seconds "$started") s"
  test -z "$(ls "$project/node_modules/$flavour/native" 2>/dev/null)" || { echo "the npm package built an addon" >&2; exit 1; }
done

cp examples/python-quickstart.py examples/python-client-quickstart.py "$fresh/"
cp examples/node-quickstart.mjs "$fresh/project-scalestore/"
cp examples/node-client-quickstart.mjs "$fresh/project-scalestore-client/"
(cd "$fresh" && run_fresh "$fresh/venv-scalestore/bin/python" python-quickstart.py)
(cd "$fresh/project-scalestore" && run_fresh node node-quickstart.mjs)
(cd "$fresh" && run_fresh "$fresh/venv-scalestore-client/bin/python" python-client-quickstart.py)
(cd "$fresh/project-scalestore-client" && run_fresh node node-client-quickstart.mjs)
echo "packages: ok"
