#!/usr/bin/env bash
# Writes deploy/kustomize/base from `stowage install --dry-run -o yaml` with the options below
# (the README's MinIO example), one file per part, leaving out the two Secrets: the overlay
# generates the credentials Secret, and the master key is made per cluster (see README.md).
# host/tests/deploy_manifests.rs fails when the base no longer matches the install.
# Usage: bash deploy/kustomize/regenerate.sh [path/to/stowage]
set -euo pipefail
cd "$(dirname "$0")/../.."
stowage="${1:-${CARGO_TARGET_DIR:-target}/debug/stowage}"
"$stowage" install --dry-run -o yaml \
  --provider aws --bucket stowage \
  --secret-file deploy/examples/credentials-minio.example \
  --backup-location-config region=minio,s3ForcePathStyle=true,s3Url=http://minio.minio.svc:9000 \
  2>/dev/null | python3 deploy/kustomize/split.py deploy/kustomize/base
