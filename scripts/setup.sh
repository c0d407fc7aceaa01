#!/usr/bin/env bash
# Installs what building ScaleStore needs on Debian/Ubuntu: a C++ toolchain and libclang
# (RocksDB is compiled from source and its Rust bindings are generated with bindgen), and
# iproute2 for the multi-host tests.
set -euo pipefail

need=()
command -v clang >/dev/null 2>&1 || need+=(clang)
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
# The production tests (a full disk, hosts in network namespaces) use ip and mount.
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v mount >/dev/null 2>&1 || need+=(mount)
if [ "${#need[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo not found; install Rust (rustup) first" >&2; exit 1; }
