#!/usr/bin/env bash
# Builds the packages users install without a compiler, into dist/:
#   scalestore-<version>-cp39-abi3-<platform>.whl  the Python package (maturin; abi3: one wheel
#                                                  for CPython 3.9 and later)
#   scalestore-<version>.tgz                      the npm package (JavaScript, types)
#   scalestore-<platform>-<version>.tgz           its prebuilt addon, napi-rs's per-platform
#                                                  layout (an optional dependency of the first)
# Both are built into the one target dir and build plan (scripts/env.sh): RocksDB is not
# compiled again. Prints each package's size and build time.
#   scripts/package.sh [--install-check]   the check also installs both, as a user would, into
#                                          fresh directories with no cargo on PATH, and runs
#                                          the quickstarts (CI runs it)
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
seconds() { echo $(( $(date +%s) - $1 )); }
size() { du -h "$1" | cut -f1; }

echo "== wheel"
started=$(date +%s)
"$SCALESTORE_VENV/bin/pip" wheel -q --no-deps -w "$dist" ./python
wheel=$(ls "$dist"/scalestore-*.whl)
case "$wheel" in *-abi3-*) ;; *) echo "not an abi3 wheel: $wheel" >&2; exit 1 ;; esac
echo "built $(basename "$wheel") ($(size "$wheel")) in $(seconds "$started") s"

echo "== npm packages"
started=$(date +%s)
(cd node && npm run -s build >/dev/null)
platform=$(node -e "console.log(require('./node/lib/native.js').platformPackage())")
version=$(node -p "require('./node/package.json').version")
stage=$(mktemp -d)
# The addon's per-platform package: the .node file and a package.json that names its platform.
mkdir -p "$stage/$platform"
cp node/native/scalestore.node "$stage/$platform/scalestore.node"
# Without debug info, as maturin strips the wheel's library (binutils' strip; 67 MB -> ~12 MB).
strip --strip-unneeded "$stage/$platform/scalestore.node"
node - "$stage/$platform" "$platform" "$version" <<'JS'
const [dir, name, version] = process.argv.slice(2)
const [, os, cpu, libc] = name.match(/^scalestore-([a-z0-9]+)-([a-z0-9]+)(?:-([a-z]+))?$/)
const pkg = { name, version, description: `ScaleStore's prebuilt native addon for ${os}-${cpu}${libc ? '-' + libc : ''}`,
  license: 'Apache-2.0', main: 'scalestore.node', files: ['scalestore.node'], os: [os], cpu: [cpu] }
if (libc) pkg.libc = [libc === 'gnu' ? 'glibc' : 'musl']
require('node:fs').writeFileSync(`${dir}/package.json`, JSON.stringify(pkg, null, 2) + '\n')
JS
# The main package: no install step (nothing to build), the addon as an optional dependency.
mkdir -p "$stage/main"
cp -r node/index.js node/index.d.ts node/lib node/scripts node/package.json "$stage/main/"
node - "$stage/main" "$platform" "$version" <<'JS'
const fs = require('node:fs')
const [dir, platform, version] = process.argv.slice(2)
const pkg = JSON.parse(fs.readFileSync(`${dir}/package.json`, 'utf8'))
delete pkg.scripts.install
delete pkg.devDependencies
pkg.files = pkg.files.filter((f) => f !== 'native/')
pkg.optionalDependencies = { [platform]: version }
fs.writeFileSync(`${dir}/package.json`, JSON.stringify(pkg, null, 2) + '\n')
JS
(cd "$stage/$platform" && npm pack -s --pack-destination "$dist" >/dev/null)
(cd "$stage/main" && npm pack -s --pack-destination "$dist" >/dev/null)
rm -rf "$stage"
echo "built scalestore-$version.tgz ($(size "$dist/scalestore-$version.tgz")) and $platform-$version.tgz ($(size "$dist/$platform-$version.tgz")) in $(seconds "$started") s"

[ "$check" = 1 ] || exit 0

echo "== installed as users install them (no cargo on PATH)"
no_cargo_path=$(echo "$PATH" | tr ':' '\n' | grep -v -e '\.cargo/bin' -e '\.rustup' | paste -sd: -)
fresh=$(mktemp -d)
run_fresh() { env -u CARGO_TARGET_DIR -u SCALESTORE_REPO PATH="$no_cargo_path" HOME="$fresh/home" "$@"; }
mkdir -p "$fresh/home"
if run_fresh sh -c 'command -v cargo' >/dev/null; then echo "cargo still on PATH" >&2; exit 1; fi

started=$(date +%s)
"$SCALESTORE_VENV/bin/python" -m venv "$fresh/venv"
run_fresh "$fresh/venv/bin/pip" install -q --no-index "$wheel"
echo "pip install of the wheel: $(seconds "$started") s (venv included)"
cp examples/python-quickstart.py "$fresh/"
(cd "$fresh" && run_fresh "$fresh/venv/bin/python" python-quickstart.py)

started=$(date +%s)
mkdir -p "$fresh/project"
(cd "$fresh/project" && run_fresh npm init -y >/dev/null \
  && run_fresh npm install --no-audit --no-fund --offline "$dist/$platform-$version.tgz" "$dist/scalestore-$version.tgz" >/dev/null)
echo "npm install of the packages: $(seconds "$started") s"
test -z "$(ls "$fresh/project/node_modules/scalestore/native" 2>/dev/null)" || { echo "the npm package built an addon" >&2; exit 1; }
cp examples/node-quickstart.mjs "$fresh/project/"
(cd "$fresh/project" && run_fresh node node-quickstart.mjs)
rm -rf "$fresh"
echo "packages: ok"
