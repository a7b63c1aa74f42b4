#!/usr/bin/env bash
# Builds the verbs smoke test natively, then runs it on two soft-RoCE hosts:
#   tests/transport/verbs_smoke/run.sh [softroce options]
# Not part of the test suite (the shared conformance suite covers the fabric);
# a quick end-to-end check of the verbs fabric with timings.
#
# Environment:
#   VERBS_SMOKE_ARGS     arguments for the program: --quick (largest op 1 MiB),
#                        --late-fork (the parent opens verbs before forking)
#   VERBS_SMOKE_BACKLOG  guest net.core.netdev_max_backlog (default 20000; 0 =
#                        leave the kernel default of 1000, with which a large
#                        RDMA READ response overflows the veth backlog and each
#                        drop costs one ACK timeout, ~2 s)
#   VERBS_SMOKE_TIMEOUT  guest timeout in seconds (default 400)
#   VERBS_SMOKE_OUT      where the binary goes (default build-verbs-smoke/)
set -euo pipefail
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../../.." && pwd -P)
out=${VERBS_SMOKE_OUT:-$root/build-verbs-smoke}
mkdir -p "$out"
g++ -std=c++20 -O2 -g -Wall -Wextra -Wno-missing-field-initializers -I"$root" \
  "$root"/tests/transport/verbs_smoke/verbs_smoke.cpp \
  "$root"/transport/verbs/*.cpp "$root"/transport/{fabric,auth,placement}.cpp \
  -o "$out/verbs_smoke" -libverbs -lrdmacm -lsodium -lhwloc
cd "$root"
backlog=${VERBS_SMOKE_BACKLOG:-20000}
# shellcheck disable=SC2016
exec scripts/softroce --hosts 2 --timeout "${VERBS_SMOKE_TIMEOUT:-400}" "$@" -- \
  bash -c 'if [[ $1 != 0 ]]; then echo "$1" >/proc/sys/net/core/netdev_max_backlog; fi
           shift; exec "$@"' _ "$backlog" "$out/verbs_smoke" ${VERBS_SMOKE_ARGS:-}
