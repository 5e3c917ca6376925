#!/usr/bin/env bash
# Runs Stowage's whole test suite on a fresh machine: installs what the tests need
# (idempotently), builds everything, then runs every test in the workspace.
#
#   bash scripts/test.sh            # everything
#   bash scripts/test.sh -p kube-sim  # extra arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=
apt_install() {
    if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# restic CLI: the compatibility tests read and write repositories with it.
if ! command -v restic >/dev/null; then log "installing restic"; apt_install restic; fi
# kubectl: kube-sim is checked against the real client.
if ! command -v kubectl >/dev/null; then log "installing kubectl"; apt_install kubectl; fi
# moto's S3 server: the object store and end-to-end tests run against a real S3 endpoint.
if ! command -v moto_server >/dev/null; then
    log "installing moto[server]"
    python3 -m pip install --quiet 'moto[server]==5.*'
fi
# promtool (Debian's prometheus package): the alert rules in deploy/monitoring are tested with it.
if ! command -v promtool >/dev/null; then log "installing promtool (prometheus)"; apt_install prometheus; fi
# MariaDB (server, mariadb-dump and the client): the mysqldump extension's end-to-end test runs it.
if ! PATH="$PATH:/usr/sbin" command -v mariadbd >/dev/null || ! command -v mariadb-install-db >/dev/null; then
    log "installing mariadb-server"; apt_install mariadb-server
fi
# Chromium (Debian's package): the dashboard's end-to-end test loads its pages in headless Chromium.
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
    log "installing chromium"; apt_install chromium
fi
# wasm32-wasip2: extensions are built as WASM components.
if ! rustup target list --installed 2>/dev/null | grep -q '^wasm32-wasip2$'; then
    log "adding the wasm32-wasip2 target"; rustup target add wasm32-wasip2
fi

log "building the WASM extensions"
bash extensions/build.sh
log "building"
cargo build --workspace --bins --tests
log "testing"
cargo test --workspace "$@"
