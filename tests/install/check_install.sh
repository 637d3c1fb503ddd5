#!/usr/bin/env bash
# Installs the built ditcache into a temporary prefix, builds tests/install/consumer against the
# installed package (find_package(ditcache), target ditcache::ditcache), and runs it.
set -euo pipefail
build_dir=$1; source_dir=$2; torch_prefix=${3:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build_dir" --prefix "$work/prefix" >/dev/null
cmake -S "$source_dir/tests/install/consumer" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$work/prefix${torch_prefix:+;$torch_prefix}" -Wno-dev >"$work/configure.log" 2>&1 \
  || { cat "$work/configure.log"; exit 1; }
cmake --build "$work/build" -j2 >"$work/build.log" 2>&1 || { tail -40 "$work/build.log"; exit 1; }
"$work/build/consumer"
