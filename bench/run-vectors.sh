#!/usr/bin/env bash
# Vectors in one command (`make bench-vectors` calls it), measured in one run on this machine
# with the release build, on the embedded store and the in-process all-minilm:
#   ingest  BENCH_DOCS documents (12-30 words each) embedded alone through
#           EmbeddingService.Embed, BENCH_BATCH texts per call (the baseline), then the same
#           documents ingested as a vector_ingest workflow (BENCH_BATCH chunks per upsert),
#           from submit to SUCCESS. The cache is off, so neither leg reuses the other's work.
#   search  BENCH_POINTS unit vectors stored, grouped in 1,000 topics like real embeddings,
#           then BENCH_QUERIES searches by text: p50/p99 of the call, of the query's embedding
#           and of the store (the server's split); then recall@10 of BENCH_RECALL vector
#           searches against exact brute force, and the same on isotropic random vectors
#           (no neighbourhoods: the worst case for the HNSW graph).
# Client: citadel-vecbench (crates/standin/src/bin/citadel-vecbench.rs). Everything on
# loopback; an EXIT trap stops every process.
# Output: bench/results/vectors-<date>.json and a Markdown table on stdout.
# Environment: BENCH_DOCS (2000), BENCH_BATCH (64), BENCH_POINTS (100000), BENCH_QUERIES (300),
# BENCH_RECALL (100), BENCH_READY_TIMEOUT (s, 120), CARGO.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

DOCS=${BENCH_DOCS:-2000}
BATCH=${BENCH_BATCH:-64}
POINTS=${BENCH_POINTS:-100000}
QUERIES=${BENCH_QUERIES:-300}
RECALL=${BENCH_RECALL:-100}
READY_TIMEOUT=${BENCH_READY_TIMEOUT:-120}
CARGO=${CARGO:-cargo}
BIN=target/release
WORK=target/bench/vectors
RESULTS_DIR=bench/results

LOG_TAG=bench-vectors
PGID_FILE=target/bench/vectors.pgids
# shellcheck source=bench/lib.sh
source bench/lib.sh
require jq python3 setsid

on_exit() {
  local rc=$?
  stop_all_groups
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
reap_stale_groups 'release/citadel'
rm -rf "$WORK"
mkdir -p "$WORK/files" "$WORK/vectors" "$RESULTS_DIR"

scripts/setup-models.sh
log "building citadel and citadel-vecbench (release)"
"$CARGO" build --release --bin citadel
"$CARGO" build --release -p citadel-standin --bin citadel-vecbench

cat >"$WORK/citadel.toml" <<TOML
[log]
level = "warn,citadel::serve=info"
[database]
url = "sqlite://$PWD/$WORK/vectors.db?mode=rwc"
[cache]
mode = "off"
[vectors]
path = "$PWD/$WORK/vectors"
ingest_batch = $BATCH
[workflows]
files_dir = "$PWD/$WORK/files"
poll_interval_ms = 50
TOML
GRPC_PORT=$(free_port)
start_citadel_with "$WORK/citadel.toml" "$WORK/citadel.log" "127.0.0.1:$GRPC_PORT" ||
  die "citadel did not start"
GRPC="http://127.0.0.1:$GRPC_PORT"
log "citadel on $CITADEL (gRPC $GRPC_PORT)"

log "ingest: $DOCS documents, embedding alone then as a workflow"
"$BIN/citadel-vecbench" --grpc "$GRPC" ingest --files "$WORK/files" --docs "$DOCS" \
  --batch "$BATCH" >"$WORK/ingest.jsonl"
log "search: $POINTS vectors, $QUERIES text queries, recall@10 over $RECALL"
"$BIN/citadel-vecbench" --grpc "$GRPC" search --points "$POINTS" --queries "$QUERIES" \
  --recall "$RECALL" >"$WORK/search.jsonl"

OUT="$RESULTS_DIR/vectors-$(date -u +%Y%m%d-%H%M%S).json"
jq -s --arg cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)" \
  --arg cores "$(nproc)" '{machine: {cpu: $cpu, cores: ($cores | tonumber)}, legs: .}' \
  "$WORK/ingest.jsonl" "$WORK/search.jsonl" >"$OUT"
log "results: $OUT"

leg() { jq -r --arg leg "$1" ".legs[] | select(.leg == \$leg) | $2" "$OUT"; }
echo
echo "| ingest | documents/s | seconds |"
echo "|---|---|---|"
for l in embed-only ingest; do
  echo "| $l | $(leg "$l" '.docs_per_s | floor') | $(leg "$l" '.seconds * 100 | floor / 100') |"
done
echo "| ratio | $(jq -r '[.legs[] | select(.leg == "ingest" or .leg == "embed-only") | .docs_per_s] | .[1] / .[0] * 100 | floor / 100' "$OUT")x | |"
echo
echo "| search by text at $POINTS vectors | p50 ms | p99 ms |"
echo "|---|---|---|"
for part in wall embed store; do
  echo "| $part | $(leg search-text ".$part.p50_us / 1000") | $(leg search-text ".$part.p99_us / 1000") |"
done
echo
echo "| recall@10 against exact search | recall | store p50 ms | store p99 ms |"
echo "|---|---|---|---|"
for l in recall-at-10 recall-at-10-isotropic; do
  echo "| $l | $(leg "$l" .recall) | $(leg "$l" '.store.p50_us / 1000') | $(leg "$l" '.store.p99_us / 1000') |"
done
