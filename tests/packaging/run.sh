#!/usr/bin/env bash
# Installs the build tree into a scratch prefix, then builds a consumer against it twice:
# with CMake's find_package(mpx) and with pkg-config; and configures a consumer that
# takes mpx by add_subdirectory. Fails (non-zero) on any failure or wrong output.
# Usage: run.sh <build-dir> <source-dir>
set -euo pipefail
build=$1
source=$2
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
expected="consumer ok: 42 16 0 1"
check() {  # check <what> <program>
  local out
  out=$("$2")
  echo "$1: $out"
  [ "$out" = "$expected" ] || { echo "$1: expected '$expected'" >&2; exit 1; }
}
# A prefix no build ever configured: everything must follow the files, not the paths.
cmake --install "$build" --prefix "$scratch/prefix" >/dev/null
cmake -S "$source/tests/packaging/consumer" -B "$scratch/cmake" \
  -DCMAKE_PREFIX_PATH="$scratch/prefix" >/dev/null
cmake --build "$scratch/cmake" >/dev/null
check find_package "$scratch/cmake/consumer"
export PKG_CONFIG_PATH="$scratch/prefix/lib/pkgconfig:$scratch/prefix/lib64/pkgconfig"
if command -v pkg-config >/dev/null; then
  pkg-config --exists --print-errors mpx
  # shellcheck disable=SC2046
  c++ -Wall -Wextra -Werror "$source/tests/packaging/consumer/main.cpp" \
    -o "$scratch/pc-consumer" $(pkg-config --cflags --libs mpx)
  check pkg-config "$scratch/pc-consumer"
fi
# add_subdirectory: configures, and leaves the consumer's CMAKE_BUILD_TYPE alone.
cmake -S "$source/tests/packaging/subdirectory" -B "$scratch/sub" \
  -DMPX_SOURCE="$source" -DMPX_MPI=OFF >/dev/null
if grep -q '^CMAKE_BUILD_TYPE:[A-Z]*=.' "$scratch/sub/CMakeCache.txt"; then
  echo "add_subdirectory(mpx) set the consumer's $(grep '^CMAKE_BUILD_TYPE' "$scratch/sub/CMakeCache.txt")" >&2
  exit 1
fi
echo "packaging ok"
