#!/usr/bin/env bash
# Builds and runs the shm smoke test against a build directory's transport
# library:  tests/transport/shm_smoke/run.sh [build-dir] [--quick]
set -euo pipefail
top=$(cd "$(dirname "$0")/../../.." && pwd)
build=${1:-$top/build}
shift || true
flags=""
if grep -q "b_sanitize.*address" "$build/meson-info/intro-buildoptions.json" 2>/dev/null &&
   python3 -c "import json,sys; o={x['name']:x['value'] for x in json.load(open('$build/meson-info/intro-buildoptions.json'))}; sys.exit(0 if 'address' in o['b_sanitize'] else 1)"; then
  flags="-fsanitize=address,undefined"
fi
out="$build/shm_smoke"
g++ -std=c++20 -O2 -g -Wall -Wextra $flags -I"$top" "$top/tests/transport/shm_smoke/shm_smoke.cpp" \
  "$build/transport/librcpg_transport.a" \
  $(pkg-config --libs libsodium fmt hwloc libibverbs librdmacm) -lpthread -o "$out"
exec "$out" "$@"
