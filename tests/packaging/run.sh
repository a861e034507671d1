#!/usr/bin/env bash
# Installs the build tree into a scratch prefix, then builds a consumer against it twice:
# with CMake's find_package(mpx) and with pkg-config. Usage: run.sh <build-dir> <source-dir>
set -euo pipefail
build=$1
source=$2
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cmake --install "$build" --prefix "$scratch/prefix" >/dev/null
cmake -S "$source/tests/packaging/consumer" -B "$scratch/cmake" \
  -DCMAKE_PREFIX_PATH="$scratch/prefix" >/dev/null
cmake --build "$scratch/cmake" >/dev/null
"$scratch/cmake/consumer"
export PKG_CONFIG_PATH="$scratch/prefix/lib/pkgconfig:$scratch/prefix/lib64/pkgconfig"
if command -v pkg-config >/dev/null; then
  # shellcheck disable=SC2046
  c++ "$source/tests/packaging/consumer/main.cpp" -o "$scratch/pc-consumer" \
    $(pkg-config --cflags --libs mpx)
  "$scratch/pc-consumer"
fi
