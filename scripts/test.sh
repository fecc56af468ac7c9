#!/usr/bin/env bash
# Sets up everything the tests need and runs every test: formatting, lints, the Rust unit and
# end-to-end tests (real servers on free loopback ports, with Redis and PostgreSQL on loopback:
# scripts/ensure-services.sh installs and starts them where missing), then the official OpenAI
# SDK and a standard gRPC health client against a running server; the AG-UI clients and the
# operator page in Chromium run inside `cargo test` (tests/realtime). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup-models.sh
if command -v rustup >/dev/null 2>&1; then
  rustup component add rustfmt clippy >/dev/null 2>&1 || true
fi

echo "==> services (redis, postgresql)"
scripts/ensure-services.sh
echo "==> node clients and chromium (AG-UI and browser tests)"
scripts/setup-js.sh
echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> deploy checks (systemd, promtool, kubernetes schemas, grafana)"
scripts/check-deploy.sh
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo test"
cargo test --workspace --locked
echo "==> client tests (openai SDK, grpcio health)"
scripts/client-tests.sh
