#!/usr/bin/env bash
# Installs what building ScaleStore needs on Debian/Ubuntu: a C++ toolchain and libclang
# (RocksDB is compiled from source and its Rust bindings are generated with bindgen), and
# iproute2 for the multi-host tests. `--python`: also a virtualenv with the Python package's
# build and test tools; `--node`: also Node.js 18+ and npm 10+. etcd (Debian's etcd-server) is
# always installed: the bench's etcd target is tested against a real member.
set -euo pipefail

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

# apt_install PKG...: installs the Debian packages given (none given: nothing to do).
apt_install() {
  [ "$#" -gt 0 ] || return 0
  echo "setup: installing $*"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

python=false
node=false
for arg in "$@"; do
  case "$arg" in
    --python) python=true ;;
    --node) node=true ;;
    --bench) python=true ;;
    *) echo "setup: unknown option $arg (use --python, --node, --bench)" >&2; exit 2 ;;
  esac
done

need=()
command -v clang >/dev/null 2>&1 || need+=(clang)
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
# The production tests (a full disk, hosts in network namespaces) use ip and mount.
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v mount >/dev/null 2>&1 || need+=(mount)
# `scalestore bench --target etcd` is tested against etcd, and compared with it by
# scripts/bench-vs-etcd.sh.
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
if $python; then
  command -v python3 >/dev/null 2>&1 || need+=(python3)
  python3 -c "import ensurepip, venv" >/dev/null 2>&1 || need+=(python3-venv)
fi
if $node; then
  command -v node >/dev/null 2>&1 || need+=(nodejs)
  command -v npm >/dev/null 2>&1 || need+=(npm)
fi
apt_install "${need[@]+"${need[@]}"}"
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo not found; install Rust (rustup) first" >&2; exit 1; }

if $python; then
  # The venv scripts/env.sh names (Debian's system pip refuses installs outside one).
  . "$(dirname "$0")/env.sh"
  [ -x "$SCALESTORE_VENV/bin/python" ] || python3 -m venv "$SCALESTORE_VENV"
  "$SCALESTORE_VENV/bin/python" -m pip install -q --upgrade pip
  "$SCALESTORE_VENV/bin/python" -m pip install -q "maturin>=1.7,<2" pytest mypy nbclient nbformat \
    ipykernel matplotlib tqdm typing_extensions
fi

if $node; then
  node -e 'process.exit(parseInt(process.versions.node) >= 18 ? 0 : 1)' \
    || { echo "setup: Node.js 18 or newer is needed (found $(node --version))" >&2; exit 1; }
  # npm 9 (Debian 12's) copies a folder dependency instead of linking it, and the copy cannot
  # see the Rust sources it builds from: `npm install /path/to/repo/node` needs npm 10+.
  if [ "$(npm --version | cut -d. -f1)" -lt 10 ]; then
    echo "setup: upgrading npm to 10 (npm install -g npm@10)"
    $SUDO npm install -g --no-audit --no-fund npm@10 >/dev/null
  fi
fi
