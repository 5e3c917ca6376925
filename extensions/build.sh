#!/usr/bin/env bash
# Builds the WebAssembly extensions and test fixtures (wasm32-wasip2 components) and copies
# them to extensions/dist/, where the runtime's tests and benches find them. Cargo makes a
# rebuild of unchanged sources a no-op.
#
#   bash extensions/build.sh
set -euo pipefail
cd "$(dirname "$0")"

if ! rustup target list --installed 2>/dev/null | grep -q '^wasm32-wasip2$'; then
    rustup target add wasm32-wasip2
fi
# A target dir of their own: the host workspace's CARGO_TARGET_DIR holds native artefacts.
export CARGO_TARGET_DIR="${STOWAGE_EXTENSIONS_TARGET_DIR:-$PWD/target}"
cargo build --quiet --release --target wasm32-wasip2 --workspace

mkdir -p dist
for crate in change-storage-class fixture-item-action fixture-hook; do
    artefact="$CARGO_TARGET_DIR/wasm32-wasip2/release/${crate//-/_}.wasm"
    cmp -s "$artefact" "dist/$crate.wasm" 2>/dev/null || cp "$artefact" "dist/$crate.wasm"
done
echo "extensions: $(ls dist | tr '\n' ' ')" >&2
