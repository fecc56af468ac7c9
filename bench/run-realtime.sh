#!/usr/bin/env bash
# The real-time edge in one command (`make bench-realtime` calls it), measured in one run on
# this machine with the release build:
#   events  workflow event delivery, from the committing write (the record's updated_at, set
#           inside the writing transaction) to the client: the baseline is one gRPC
#           WorkflowService.Watch with records; then BENCH_SUBSCRIBERS WebSockets on
#           /ws/orchestration, every one subscribed to `workflows`, while BENCH_WORKFLOWS noop
#           workflows are submitted at BENCH_RATE/s (three changes each: PENDING, STARTED,
#           SUCCESS). Every socket must receive every change (the run fails otherwise).
#   agui    time to the first text: a streamed POST /v1/chat/completions, then POST
#           /api/v1/agui, which wraps that same call, alternately, BENCH_AGUI_REQUESTS of each,
#           one at a time, through the stand-in vLLM (`citadel-vllm-standin`, no delays).
# Client: citadel-wsbench (crates/standin/src/bin/citadel-wsbench.rs). Database: the embedded
# default (SQLite, a fresh file). Everything on loopback; an EXIT trap stops every process.
# Output: bench/results/realtime-<date>.json and a Markdown table on stdout.
# Environment: BENCH_SUBSCRIBERS (1000), BENCH_WORKFLOWS (300), BENCH_RATE (50),
# BENCH_AGUI_REQUESTS (200), BENCH_READY_TIMEOUT (s, 120), CARGO.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

SUBSCRIBERS=${BENCH_SUBSCRIBERS:-1000}
WORKFLOWS=${BENCH_WORKFLOWS:-300}
RATE=${BENCH_RATE:-50}
AGUI_REQUESTS=${BENCH_AGUI_REQUESTS:-200}
READY_TIMEOUT=${BENCH_READY_TIMEOUT:-120}
CARGO=${CARGO:-cargo}
BIN=target/release
WORK=target/bench/realtime
RESULTS_DIR=bench/results

LOG_TAG=bench-realtime
PGID_FILE=target/bench/realtime.pgids
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
reap_stale_groups 'citadel-vllm-standin|release/citadel'
mkdir -p "$WORK" "$RESULTS_DIR"

# Two descriptors per subscriber in this run (client and server side), and slack.
FDS_WANTED=$((SUBSCRIBERS * 2 + 4096))
if (($(ulimit -n) < FDS_WANTED)); then
  ulimit -n "$FDS_WANTED" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fi
(($(ulimit -n) >= SUBSCRIBERS * 2 + 256)) || die "open files limit $(ulimit -n) is too low"

log "building citadel, the stand-in vLLM and citadel-wsbench (release)"
"$CARGO" build --release --bin citadel
"$CARGO" build --release -p citadel-standin --bin citadel-vllm-standin --bin citadel-wsbench

start "$WORK/standin.log" "$BIN/citadel-vllm-standin" --addr 127.0.0.1:0 --model standin-llm=4096
STANDIN=$(listening_addr "$WORK/standin.log" "vllm standin listening on" "the stand-in")

DB="$PWD/$WORK/realtime-$$.db"
rm -f "$DB" "$DB-wal" "$DB-shm"
cat >"$WORK/citadel.toml" <<TOML
[log]
level = "warn,citadel::serve=info"
[database]
url = "sqlite://$DB?mode=rwc"
[[llm.servers]]
name = "standin"
url = "http://$STANDIN"
[agui]
default_model = "standin-llm"
TOML
GRPC_PORT=$(free_port)
start_citadel_with "$WORK/citadel.toml" "$WORK/citadel.log" "127.0.0.1:$GRPC_PORT" ||
  die "citadel did not start"
log "citadel on $CITADEL (gRPC $GRPC_PORT), stand-in on $STANDIN"

log "events: 1 gRPC watcher, then $SUBSCRIBERS WebSockets; $WORKFLOWS workflows at $RATE/s"
"$BIN/citadel-wsbench" events --http "$CITADEL" --grpc "http://127.0.0.1:$GRPC_PORT" \
  --subscribers "$SUBSCRIBERS" --workflows "$WORKFLOWS" --rate "$RATE" >"$WORK/events.jsonl"
log "agui: $AGUI_REQUESTS of each, one at a time"
"$BIN/citadel-wsbench" agui --http "$CITADEL" --requests "$AGUI_REQUESTS" >"$WORK/agui.jsonl"

OUT="$RESULTS_DIR/realtime-$(date -u +%Y%m%d-%H%M%S).json"
jq -s --arg cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)" \
  --arg cores "$(nproc)" '{machine: {cpu: $cpu, cores: ($cores | tonumber)}, legs: .}' \
  "$WORK/events.jsonl" "$WORK/agui.jsonl" >"$OUT"
log "results: $OUT"

ms() { jq -r --arg leg "$1" --arg k "$2" '.legs[] | select(.leg == $leg) | .[$k] / 1000' "$OUT"; }
WS="ws-$SUBSCRIBERS"
expected=$((SUBSCRIBERS * WORKFLOWS * 3))
got=$(jq -r --arg leg "$WS" '.legs[] | select(.leg == $leg) | .samples' "$OUT")
echo
echo "| leg | events | p50 ms | p99 ms | max ms |"
echo "|---|---|---|---|---|"
for leg in grpc-watch-1 "$WS"; do
  echo "| $leg | $(jq -r --arg leg "$leg" '.legs[] | select(.leg == $leg) | .samples' "$OUT") | $(ms "$leg" p50_us) | $(ms "$leg" p99_us) | $(ms "$leg" max_us) |"
done
echo
echo "| first text | p50 ms | p99 ms |"
echo "|---|---|---|"
for leg in chat-stream-first-text agui-first-text; do
  echo "| $leg | $(ms "$leg" p50_us) | $(ms "$leg" p99_us) |"
done
((got >= expected)) || die "the sockets received $got of $expected changes"
