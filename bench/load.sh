#!/usr/bin/env bash
# Load benchmarks (release builds, as bench/backup-10k.sh): the ignored tests of
# host/tests/load.rs, against kube-sim in process and moto as the S3 server.
#   - LOAD_PODS pods (default 200), one small volume each, on three nodes with a node agent
#     each (two volumes at once), in one backup; a namespace of them restored and compared;
#   - LOAD_OBJECTS ConfigMaps (default 10000,50000,100000: one namespace grown from size to
#     size, each size backed up by a fresh server), a sample restored and compared.
# Prints the BENCH lines (wall times, peak RSS of the server and agents from /proc VmHWM) with the
# load average and CPU. Run from the repository root: `bash bench/load.sh [test name filter]`.
set -euo pipefail
cd "$(dirname "$0")/.."
export LOAD_OBJECTS=${LOAD_OBJECTS:-10000,50000,100000}
cargo build -q --release -p stowage -p stowage-node-agent -p stowage-restore-helper
cargo test -q --release -p stowage --test load --no-run
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores"
echo "before: $(uptime)"
log=$(mktemp)
status=0
cargo test -q --release -p stowage --test load -- --ignored --nocapture --test-threads 1 "$@" >"$log" 2>&1 || status=$?
echo "after: $(uptime)"
if [ "$status" -ne 0 ]; then tail -100 "$log"; fi
grep -E "^BENCH|pods running|test result" "$log" || true
rm -f "$log"
exit "$status"
