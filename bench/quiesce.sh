#!/usr/bin/env bash
# How long a volume stays frozen (fsfreeze) or its workload at zero replicas (scale-to-zero),
# from the quiesce to the host's undo, against the volume copy's own time: the end-to-end
# kube-sim setup of host/tests/e2e_quiesce.rs with the real server and node agent, a sampler
# polling every 20 ms.
#
#   bench/quiesce.sh              # 1 GiB
#   SIZE_MIB=256 bench/quiesce.sh # quick
set -euo pipefail
cd "$(dirname "$0")/.."
export SIZE_MIB=${SIZE_MIB:-1024}
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs);" \
    "sha_ni: $(grep -qw sha_ni /proc/cpuinfo && echo yes || echo no)" >&2
cargo build -q --workspace --bins
cargo test -q -p stowage --test e2e_quiesce -- --ignored --nocapture quiesce_window 2>&1 | grep '^BENCH'
