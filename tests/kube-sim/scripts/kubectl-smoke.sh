#!/usr/bin/env bash
# Drives a cluster (kube-sim, or a real one) with kubectl the way a person would:
# apply, get, label, delete, get -w. Needs KUBECONFIG; exits non-zero on the first surprise.
set -euo pipefail
k() { kubectl --request-timeout=15s "$@"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ns="smoke-$$"

k create namespace "$ns"
k create secret generic creds -n "$ns" --from-literal=password=s3cret
[ "$(k get secret creds -n "$ns" -o jsonpath='{.data.password}' | base64 -d)" = s3cret ] || fail "secret data"
manifest() {
cat <<YAML
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  labels: {app: smoke}
data:
  color: $1
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: smoke}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1.27
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
YAML
}
manifest blue | k apply -n "$ns" -f -
[ "$(k get configmap settings -n "$ns" -o jsonpath='{.data.color}')" = blue ] || fail "configmap not applied"
out=$(manifest green | k apply -n "$ns" -f -)
grep -q 'configmap/settings configured' <<<"$out" || fail "re-apply did not configure: $out"
[ "$(k get configmap settings -n "$ns" -o jsonpath='{.data.color}')" = green ] || fail "re-apply did not change data"
[ -n "$(k get service web -n "$ns" -o jsonpath='{.spec.clusterIP}')" ] || fail "service has no clusterIP"

k label configmap settings -n "$ns" tier=backend
[ "$(k get configmaps -n "$ns" -l tier=backend -o name)" = configmap/settings ] || fail "label selector"
[ -z "$(k get configmaps -n "$ns" -l 'tier notin (backend)' -o name)" ] || fail "notin selector matched"
out=$(k get configmaps -n "$ns")
grep -q '^settings ' <<<"$out" || fail "table output has no settings row: $out"
k get deployments -n "$ns" -o wide >/dev/null

# Watch a delete as it happens.
timeout 8 kubectl get configmap settings -n "$ns" -w --output-watch-events >"$work/watch.out" 2>"$work/watch.err" &
watcher=$!
sleep 2
k delete configmap settings -n "$ns"
wait "$watcher" || true
grep -q 'DELETED' "$work/watch.out" || { cat "$work/watch.out" "$work/watch.err" >&2; fail "watch did not see the delete"; }
out=$(k get configmap settings -n "$ns" 2>&1 || true)
grep -q NotFound <<<"$out" || fail "deleted configmap still there: $out"

k scale deployment web -n "$ns" --replicas=0
[ "$(k get deployment web -n "$ns" -o jsonpath='{.spec.replicas}')" = 0 ] || fail "scale"

k delete namespace "$ns" --wait=true --timeout=30s
out=$(k get namespace "$ns" 2>&1 || true)
grep -q NotFound <<<"$out" || fail "namespace still there: $out"
echo "kubectl smoke: ok"
