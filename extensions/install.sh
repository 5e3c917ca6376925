#!/usr/bin/env bash
# Installs a shipped extension into the cluster kubectl points at: its configmap.yaml with
# the module added (the component from dist/, built by build.sh, or the script).
#
#   bash extensions/install.sh change-storage-class [namespace]
set -euo pipefail
cd "$(dirname "$0")"
name="${1:?usage: install.sh <extension> [namespace]}"
namespace="${2:-stowage}"
dir="$name"
[ -f "$dir/configmap.yaml" ] || { echo "no extension $name" >&2; exit 1; }

config="$(mktemp)"; trap 'rm -f "$config"' EXIT
# config.yaml is the block under data.config.yaml in the manifest.
awk '/^  config.yaml: \|/{on=1; next} on && /^  [^ ]/{on=0} on{sub(/^    /, ""); print}' "$dir/configmap.yaml" >"$config"
kind="$(awk '/stowage.io\/extension:/{print $2}' "$dir/configmap.yaml")"

if [ -f "$dir/script.rhai" ]; then
    module=(--from-file=script.rhai="$dir/script.rhai")
else
    [ -f "dist/$name.wasm" ] || { echo "dist/$name.wasm is missing: run bash extensions/build.sh" >&2; exit 1; }
    module=(--from-file=extension.wasm="dist/$name.wasm")
fi
kubectl create configmap "$name" -n "$namespace" "${module[@]}" --from-file=config.yaml="$config" \
    --dry-run=client -o yaml | kubectl apply -f -
kubectl label configmap "$name" -n "$namespace" --overwrite "stowage.io/extension=$kind"
