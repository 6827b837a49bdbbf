#!/usr/bin/env bash
# Installs what building Weir needs and a fresh Debian machine lacks:
# RocksDB's shared library (linked instead of building its C++, see DESIGN.md)
# and libclang (for the bindings). Does nothing when they are present.
set -euo pipefail
missing=()
for pkg in librocksdb-dev libclang-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
