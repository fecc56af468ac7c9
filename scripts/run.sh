#!/usr/bin/env bash
# Sets up and starts Citadel on its embedded defaults: REST on 0.0.0.0:8000, gRPC on
# 0.0.0.0:50051, all-minilm in process. Safe to run again. Extra arguments go to `serve`,
# e.g. scripts/run.sh --http-addr 127.0.0.1:8000
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-models.sh
echo "==> building citadel (release; the first build takes several minutes)"
cargo build --release --locked --bin citadel
exec target/release/citadel serve "$@"
