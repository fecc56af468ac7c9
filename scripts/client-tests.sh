#!/usr/bin/env bash
# Runs tests/sdk against the debug binary with the clients users have: the official `openai`
# and `ollama` Python SDKs and grpcio's health stub. Needs `cargo build` and
# `scripts/setup-models.sh` first (scripts/test.sh does both).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv/clients
PINS=(openai==3.52.0 ollama==0.6.3 pytest==9.2.0 grpcio==1.85.1 grpcio-health-checking==1.85.1 numpy==2.4.6)
if [[ ! -f "$VENV/.pins" ]] || [[ "$(cat "$VENV/.pins")" != "${PINS[*]}" ]]; then
  echo "==> creating $VENV (${PINS[*]})"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: "${PINS[@]}"
  echo "${PINS[*]}" > "$VENV/.pins"
fi
# The same build `cargo test --workspace` makes (it includes target/debug/citadel): a no-op
# after scripts/test.sh, where `cargo build --bin citadel` would resolve features differently.
cargo test --workspace --locked --no-run --quiet
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/sdk "$@"
