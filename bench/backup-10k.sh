#!/usr/bin/env bash
# Whole-process backup benchmark: N ConfigMaps (default 10000) in kube-sim, backed up by the
# real `stowage server` to a filesystem location; beside it, in the same run, the baseline of the
# same objects read as JSON and piped through `zstd`. Prints items/s for both and the server's
# peak RSS. Run from the repository root: `bash bench/backup-10k.sh [N]`.
#
# EXTENSIONS=1 also loads the extension pipeline bench's three extensions (two WASM item
# actions, one Rhai item filter; `bash extensions/build.sh` first) as opt-in ConfigMaps and
# backs the objects up ROUNDS times (default 3) without and with them, one after the other,
# printing each pair's throughput ratio.
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
# kubectl takes about four times kube-sim's CPU per object (about 1.1 ms to 0.27 ms): the
# objects go in LOAD_JOBS files (default: one per core) created side by side.
jobs=${LOAD_JOBS:-$(nproc)}
python3 - "$n" "$jobs" "$work" <<'PY'
import json, sys
n, jobs, work = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
items = [{"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": f"config-{i:07d}", "namespace": "bench", "labels": {"app": f"app-{i % 50}"},
                       "annotations": {"description": "x" * 200}},
          "data": {"settings.yaml": f"replicas: {i % 7}\n" + "key: value\n" * 50}} for i in range(n)]
# One document per object: kubectl validates each kind server-side.
for j in range(jobs):
    with open(f"{work}/objects-{j}.yaml", "w") as f:
        f.write("\n---\n".join(json.dumps(i) for i in items[j::jobs]))
PY
start=$(date +%s.%N)
pids=()
for j in $(seq 0 $((jobs - 1))); do
    kubectl create -f "$work/objects-$j.yaml" >/dev/null &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
load_secs=$(echo "$(date +%s.%N) - $start" | bc)
load_sim_cpu=$(ps -o times= -p "$sim_pid" | tr -d ' ')
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
# backup NAME EXTENSIONS: runs a backup of the bench namespace naming the opt-in EXTENSIONS (a
# YAML list); sets phase, secs and items.
backup() {
    local start
    start=$(date +%s.%N)
    kubectl create -f - >/dev/null <<YAML
apiVersion: stowage.io/v1alpha1
kind: Backup
metadata: {name: $1, namespace: stowage}
spec: {includedNamespaces: [bench], extensions: $2}
YAML
    while :; do
        phase=$(kubectl get backup "$1" -n stowage -o jsonpath='{.status.phase}')
        case "$phase" in Completed|PartiallyFailed|Failed|FailedValidation) break ;; esac
        sleep 0.05
    done
    secs=$(echo "$(date +%s.%N) - $start" | bc)
    items=$(kubectl get backup "$1" -n stowage -o jsonpath='{.status.progress.itemsBackedUp}')
}

if [ -n "${EXTENSIONS:-}" ]; then
    wasm=extensions/dist/fixture-item-action.wasm
    [ -f "$wasm" ] || { echo "$wasm is missing: run bash extensions/build.sh" >&2; exit 1; }
    # extension NAME KIND FILE CONFIG
    extension() {
        kubectl create configmap "$1" -n stowage --from-file="$3" --from-literal=config.yaml="$4" >/dev/null
        kubectl label configmap "$1" -n stowage stowage.io/extension="$2" >/dev/null
    }
    extension annotate item-action extension.wasm="$wasm" $'optIn: true\nparameters: {mode: annotate, value: bench}\n'
    extension inspect item-action extension.wasm="$wasm" $'optIn: true\nparameters: {mode: inspect}\norder: 1\n'
    extension skip-app item-filter script.rhai=extensions/fixtures/rhai/skip-app.rhai $'optIn: true\nparameters: {skip-app: app-3}\n'
    for name in annotate inspect skip-app; do
        for _ in $(seq 100); do
            state=$(kubectl get configmap "$name" -n stowage -o jsonpath='{.metadata.annotations.stowage\.io/extension-state}')
            [ "$state" = Active ] && break
            sleep 0.1
        done
        [ "$state" = Active ] || { echo "extension $name is not Active: $state" >&2; exit 1; }
    done
    for round in $(seq "${ROUNDS:-3}"); do
        backup "plain-$round" "[]"
        plain_secs=$secs plain_items=$items
        backup "extended-$round" "[annotate, inspect, skip-app]"
        printf 'round %s: without %.2fs %.0f items/s (%s), with the three %.2fs %.0f items/s (%s): ratio %.2f\n' "$round" \
            "$plain_secs" "$(echo "$plain_items / $plain_secs" | bc -l)" "$plain_items" \
            "$secs" "$(echo "$items / $secs" | bc -l)" "$phase" "$(echo "($items / $secs) / ($plain_items / $plain_secs)" | bc -l)"
    done
fi
backup bench "[]"
# GNU time ignores SIGINT while it waits: signal the server itself.
pkill -INT -P "$srv_pid"; wait "$srv_pid" 2>/dev/null || true
rss=$(tail -1 "$work/server.rss")
archive=$(stat -c %s "$work/backups/backups/bench/bench.tar.zst")
printf 'objects=%s phase=%s items=%s\n' "$n" "$phase" "$items"
printf 'loaded into kube-sim: %.1fs (%s kubectl create side by side; kube-sim CPU %ss)\n' "$load_secs" "$jobs" "$load_sim_cpu"
printf 'stowage backup:  %.2fs  %.0f items/s  server peak RSS %s KiB  archive %s bytes\n' "$secs" "$(echo "$items / $secs" | bc -l)" "$rss" "$archive"
printf 'json|zstd base:  %.2fs  %.0f items/s  output %s bytes\n' "$base_secs" "$(echo "$n / $base_secs" | bc -l)" "$(stat -c %s "$work/baseline.json.zst")"
printf 'ratio (stowage/baseline throughput): %.2f\n' "$(echo "($items / $secs) / ($n / $base_secs)" | bc -l)"
