#!/usr/bin/env bash
# Whole-process backup benchmark: N ConfigMaps (default 10000) in kube-sim, backed up by the
# real `stowage server` to a filesystem location; beside it, in the same run, the baseline of the
# same objects read as JSON and piped through `zstd`. Prints items/s for both and the server's
# peak RSS. Run from the repository root: `bash bench/backup-10k.sh [N]`.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
target=${CARGO_TARGET_DIR:-target}
cargo build -q --release -p kube-sim -p stowage
work=$(mktemp -d)
cleanup() { kill "${sim_pid:-}" "${srv_pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
export KUBECONFIG=$work/kubeconfig

"$target/release/kube-sim" --kubelet-root "$work/kubelet" --kubeconfig-out "$KUBECONFIG" --no-controllers >"$work/sim.log" 2>&1 &
sim_pid=$!
for _ in $(seq 50); do [ -s "$KUBECONFIG" ] && break; sleep 0.1; done

kubectl create namespace bench >/dev/null
python3 - "$n" >"$work/objects.yaml" <<'PY'
import json, sys
n = int(sys.argv[1])
items = [{"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": f"config-{i:07d}", "namespace": "bench", "labels": {"app": f"app-{i % 50}"},
                       "annotations": {"description": "x" * 200}},
          "data": {"settings.yaml": f"replicas: {i % 7}\n" + "key: value\n" * 50}} for i in range(n)]
# One document per object: kubectl validates each kind server-side.
sys.stdout.write("\n---\n".join(json.dumps(i) for i in items))
PY
kubectl create -f "$work/objects.yaml" >/dev/null
kubectl apply -f deploy/crds >/dev/null
kubectl create namespace stowage >/dev/null
mkdir -p "$work/backups"
kubectl apply -f - >/dev/null <<YAML
apiVersion: stowage.io/v1alpha1
kind: BackupStorageLocation
metadata: {name: default, namespace: stowage}
spec: {provider: filesystem, objectStorage: {bucket: "$work/backups"}, default: true}
YAML

# Baseline: the same objects as JSON through zstd.
start=$(date +%s.%N)
kubectl get configmaps -n bench -o json | zstd -3 -q -o "$work/baseline.json.zst"
base_secs=$(echo "$(date +%s.%N) - $start" | bc)

/usr/bin/time -f "%M" -o "$work/server.rss" "$target/release/stowage" server --kubeconfig "$KUBECONFIG" -n stowage \
    --metrics-address 127.0.0.1:0 >"$work/server.log" 2>&1 &
srv_pid=$!
sleep 1
start=$(date +%s.%N)
kubectl create -f - >/dev/null <<YAML
apiVersion: stowage.io/v1alpha1
kind: Backup
metadata: {name: bench, namespace: stowage}
spec: {includedNamespaces: [bench]}
YAML
while :; do
    phase=$(kubectl get backup bench -n stowage -o jsonpath='{.status.phase}')
    case "$phase" in Completed|PartiallyFailed|Failed|FailedValidation) break ;; esac
    sleep 0.2
done
secs=$(echo "$(date +%s.%N) - $start" | bc)
items=$(kubectl get backup bench -n stowage -o jsonpath='{.status.progress.itemsBackedUp}')
# GNU time ignores SIGINT while it waits: signal the server itself.
pkill -INT -P "$srv_pid"; wait "$srv_pid" 2>/dev/null || true
rss=$(tail -1 "$work/server.rss")
archive=$(stat -c %s "$work/backups/backups/bench/bench.tar.zst")
printf 'objects=%s phase=%s items=%s\n' "$n" "$phase" "$items"
printf 'stowage backup:  %.2fs  %.0f items/s  server peak RSS %s KiB  archive %s bytes\n' "$secs" "$(echo "$items / $secs" | bc -l)" "$rss" "$archive"
printf 'json|zstd base:  %.2fs  %.0f items/s  output %s bytes\n' "$base_secs" "$(echo "$n / $base_secs" | bc -l)" "$(stat -c %s "$work/baseline.json.zst")"
printf 'ratio (stowage/baseline throughput): %.2f\n' "$(echo "($items / $secs) / ($n / $base_secs)" | bc -l)"
