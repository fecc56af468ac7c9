#!/usr/bin/env bash
# Installs what the browser and AG-UI tests run with: the Node packages of tests/js (the
# official @ag-ui/client 1.0.0 and 0.0.59, playwright-core; pinned by package-lock.json) and
# Debian's chromium for Playwright to drive (its own browser download cannot work offline).
# Needs Node 20+ and npm. Safe to run again: a no-op once both are in place.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "setup-js: $*"; }

command -v node >/dev/null 2>&1 || { echo "setup-js: error: node not found: install Node.js 20+" >&2; exit 1; }
if [[ ! -f tests/js/node_modules/.package-lock.json ]] ||
  ! cmp -s tests/js/package-lock.json tests/js/node_modules/.citadel-lock; then
  say "installing tests/js (npm ci)"
  (cd tests/js && npm ci --no-audit --no-fund --loglevel=error)
  cp tests/js/package-lock.json tests/js/node_modules/.citadel-lock
fi

if ! command -v chromium >/dev/null 2>&1; then
  say "installing Debian's chromium"
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
  fi
fi
say "ready (node $(node --version), $(chromium --version 2>/dev/null || echo chromium))"
