#!/usr/bin/env bash
# LLM gateway benchmark in one command (`make bench-llm` calls it): the stand-in vLLM server
# (`citadel-vllm-standin`, POST /v1/chat/completions, SSE when "stream": true) measured in one run
#   (a) direct    load generator -> stand-in
#   (b) citadel   load generator -> citadel serve ([[llm.servers]]) -> stand-in
#   (c) litellm   load generator -> LiteLLM proxy (1 worker; model openai/<name>, api_base the
#                 stand-in) -> stand-in
# with the same load for each. Two stand-ins run for the whole benchmark:
#   stream   model standin-llm, TTFT BENCH_TTFT_MS (20) ms, BENCH_ITL_MS (10) ms between tokens,
#            BENCH_TOKENS (64) tokens; requests ask "max_tokens": 64, "stream": true
#   fast     model standin-fast, no delays, 16 tokens: the unary saturation upstream, so that
#            it is not the bottleneck
# Citadel runs once per run with both stand-ins as two [[llm.servers]] entries (llm-01, llm-02;
# it finds their models with GET /v1/models) and its in-process embedding models off; LiteLLM's
# config lists both models likewise.
# Scenarios (BENCH_SCENARIOS, "rate concurrent unary"), each BENCH_WARMUP s + BENCH_DURATION s:
#   rate        open loop at BENCH_RATES new streams/s (`citadel-streamgen --mode rate`, from
#               crates/standin): TTFT from each stream's *scheduled* start (no coordinated
#               omission) to the first SSE event carrying a content delta, total stream time.
#               "Added" TTFT = the leg's percentile minus direct's, same run.
#   concurrent  BENCH_STREAMS streams held open (each restarted when it ends): content chunks/s
#               delivered over all streams, TTFT (from the send), and the server's peak RSS
#               (VmRSS of its process group from /proc, sampled every 200 ms over the scenario)
#   Both streamed scenarios also report the CPU (cores, measured window) of the server, of the
#   stand-in behind it and of the load generator, and the server's CPU time per chunk.
#   unary       "stream": false against the fast stand-in, closed loop over BENCH_CONCURRENCY
#               keep-alive connections (`citadel-loadgen --mode closed`): requests/s, p50/p99
# Before each scenario the script waits until the server is idle again (no request in flight at
# the stand-ins, a unary request answered within 0.5 s): after an overload LiteLLM works through
# requests whose clients have gone for many seconds (up to BENCH_DRAIN_TIMEOUT s).
#
# Steps: 1. .venv/litellm with the pinned litellm[proxy] (created once, as bench/run-upstream.sh)
#        2. cargo build --release: citadel-standin's binaries, then citadel (leg (b) is skipped,
#           and the run fails, if citadel does not build or start)
#        3. the stand-ins; citadel and LiteLLM in turn, each with a generated config; LiteLLM with
#           every remote fetch switched off and a dead loopback proxy for anything else
#        4. one streamed and one unary answer per leg checked against the stand-in's own text
#        5. load; 6. bench/results/llm-<date>.json + Markdown on stdout (per-run files in
#           target/bench/llm/). An EXIT trap stops every process this script started.
# Exits non-zero when a leg could not run or answered wrongly, or a direct or Citadel stream or
# request failed (warm-up included). LiteLLM's failures (time-outs when offered more than it
# serves) are reported, not fatal.
# Environment: BENCH_DURATION (s, 10), BENCH_WARMUP (s, 2), BENCH_RATES ("50 200"),
# BENCH_STREAMS (1000), BENCH_CONCURRENCY (32), BENCH_SCENARIOS ("rate concurrent unary"),
# BENCH_LEGS ("direct citadel litellm"; direct always runs: it is every ratio's baseline),
# BENCH_TTFT_MS (20), BENCH_ITL_MS (10), BENCH_TOKENS (64), BENCH_STREAM_TIMEOUT_MS (30000: a
# stream past it is an error), BENCH_DRAIN_TIMEOUT (s, 120), BENCH_NICE (-10: priority of the
# servers and load generators, as root), BENCH_READY_TIMEOUT (s, 120), BENCH_PYTHON (the python3
# that creates the venv), CARGO.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The same pin as bench/run-upstream.sh (1.103+ needs a certifi the package index lacks).
LITELLM_PIN='litellm[proxy]==1.102.4'
VENV=.venv/litellm
WORK=target/bench/llm
RESULTS_DIR=bench/results
DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-2}
RATES=${BENCH_RATES:-"50 200"}
STREAMS=${BENCH_STREAMS:-1000}
CONCURRENCY=${BENCH_CONCURRENCY:-32}
SCENARIOS=${BENCH_SCENARIOS:-"rate concurrent unary"}
LEGS=${BENCH_LEGS:-"direct citadel litellm"}
TTFT_MS=${BENCH_TTFT_MS:-20}
ITL_MS=${BENCH_ITL_MS:-10}
TOKENS=${BENCH_TOKENS:-64}
STREAM_TIMEOUT_MS=${BENCH_STREAM_TIMEOUT_MS:-30000}
DRAIN_TIMEOUT=${BENCH_DRAIN_TIMEOUT:-120}
READY_TIMEOUT=${BENCH_READY_TIMEOUT:-120}
CARGO=${CARGO:-cargo}
BIN=target/release
PROMPT='Write one short sentence about a quiet river.'

LOG_TAG=bench-llm
PGID_FILE=target/bench/llm.pgids
# shellcheck source=bench/lib.sh
source bench/lib.sh
require curl jq python3 setsid

has() { # has WORD LIST: WORD is in the space-separated LIST
  [[ " $2 " == *" $1 "* ]]
}

# ---------------------------------------------------------------------------- processes
on_exit() {
  local rc=$?
  stop_all_groups
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
reap_stale_groups 'citadel-vllm-standin|release/citadel|bin/litellm'

# BENCH_STREAMS connections need descriptors: 2 per stream in a gateway (client and upstream
# side), 1 in the stand-in and the load generator. Every process started below inherits this.
FDS_WANTED=$((STREAMS * 4 + 4096))
if (($(ulimit -n) < FDS_WANTED)); then
  ulimit -n "$FDS_WANTED" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fi
FDS=$(ulimit -n)
((FDS >= STREAMS * 2 + 256)) || die "open files limit $FDS is too low for $STREAMS streams (hard limit $(ulimit -Hn))"
log "open files limit: $FDS"

# ---------------------------------------------------------------------------- 1. venv
ensure_venv() {
  if [[ -x $VENV/bin/litellm && -f $VENV/.bench-pins && "$(cat "$VENV/.bench-pins")" == "$LITELLM_PIN" ]]; then
    log "reusing $VENV ($LITELLM_PIN)"
    return
  fi
  if [[ ! -x $VENV/bin/python ]]; then
    local py=${BENCH_PYTHON:-python3}
    log "creating $VENV with $("$py" --version 2>&1)"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    "$py" -m venv "$VENV"
  fi
  rm -f "$VENV/.bench-pins"
  log "installing $LITELLM_PIN into $VENV (about a minute the first time)"
  "$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off "$LITELLM_PIN"
  printf '%s\n' "$LITELLM_PIN" >"$VENV/.bench-pins"
}
if has litellm "$LEGS"; then
  ensure_venv
fi

# ---------------------------------------------------------------------------- 2. build
log "building the stand-in and the load generators"
"$CARGO" build --release -p citadel-standin --bins
CITADEL_BUILT=0
if has citadel "$LEGS"; then
  log "building citadel"
  if "$CARGO" build --release --bin citadel; then
    CITADEL_BUILT=1
  else
    log "WARNING: citadel did not build; leg (b) is skipped"
  fi
fi

# ---------------------------------------------------------------------------- 3. servers
# Everything started from here on (servers, load generators) inherits this priority, so that a
# build running beside the benchmark on these 2 cores skews it less. Root only; BENCH_NICE=0: off.
NICE=${BENCH_NICE:--10}
if ((NICE != 0)) && ((EUID == 0)); then
  renice -n "$NICE" -p $$ >/dev/null && log "running at nice $NICE"
fi

rm -rf "$WORK"
mkdir -p "$WORK" "$RESULTS_DIR"
RAW=$WORK/runs.jsonl
: >"$RAW"
FAILED=()

jq -cn --arg p "$PROMPT" --argjson n "$TOKENS" \
  '{model: "standin-llm", messages: [{role: "user", content: $p}], max_tokens: $n, stream: true}' \
  >"$WORK/stream.json"
jq -cn --arg p "$PROMPT" \
  '{model: "standin-fast", messages: [{role: "user", content: $p}], max_tokens: 16, stream: false}' \
  >"$WORK/unary.json"

start_standin() { # start_standin NAME ARGS...: sets ADDR and PGID
  local name=$1
  shift
  start "$WORK/standin-$name.log" "$BIN/citadel-vllm-standin" --addr 127.0.0.1:0 "$@"
  PGID=$STARTED
  ADDR=$(listening_addr "$WORK/standin-$name.log" "vllm standin listening on" "the $name stand-in")
}
start_standin stream --model standin-llm --ttft-ms "$TTFT_MS" --itl-ms "$ITL_MS" --tokens "$TOKENS"
STANDIN=$ADDR STANDIN_PGID=$PGID
start_standin fast --model standin-fast --ttft-ms 0 --itl-ms 0 --tokens 16
FAST=$ADDR
log "stand-ins: stream http://$STANDIN, fast http://$FAST"
LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average before the run: $LOADAVG_START (other work on these 2 cores skews every figure)"

start_citadel() { # sets CITADEL (host:port) and CITADEL_PGID, or returns 1
  cat >"$WORK/citadel.toml" <<EOF
# Generated by bench/run-llm.sh: the two stand-ins as LLM servers; their models (standin-llm,
# standin-fast) are found with GET /v1/models. Per-request INFO lines stay off the hot path.
[log]
level = "warn,citadel::serve=info"

# An LLM-only gateway: the in-process embedding models stay unloaded, so the RSS figures are
# what the streams cost, not ONNX Runtime's sessions (about 400 MB).
[models.all-minilm]
enabled = false
[models."all-minilm:int8"]
enabled = false

[llm]
# Route on Citadel's own in-flight counts, as LiteLLM does.
load_interval_ms = 0

[[llm.servers]]
name = "llm-01"
url = "http://$STANDIN"

[[llm.servers]]
name = "llm-02"
url = "http://$FAST"
EOF
  start_citadel_with "$WORK/citadel.toml" "$WORK/citadel.log"
}

# LiteLLM reads these at import or start-up; each stops a fetch from the internet (model cost
# map, blog posts, Anthropic beta headers, auto-router presets, policy templates). Anything
# else is sent to a dead loopback proxy; the stand-ins are reached directly (NO_PROXY).
DEAD=http://127.0.0.1:9
LITELLM_ENV=(
  LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOCAL_BLOG_POSTS=True
  LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS=True LITELLM_LOCAL_AUTOROUTER_PRESETS=True
  LITELLM_LOCAL_POLICY_TEMPLATES=True
  "LITELLM_MODEL_COST_MAP_URL=$DEAD/" "LITELLM_BLOG_POSTS_URL=$DEAD/"
  "LITELLM_ANTHROPIC_BETA_HEADERS_URL=$DEAD/" "LITELLM_AUTOROUTER_PRESETS_URL=$DEAD/"
  "HTTP_PROXY=$DEAD" "HTTPS_PROXY=$DEAD" "ALL_PROXY=$DEAD" "http_proxy=$DEAD" "https_proxy=$DEAD"
  "NO_PROXY=127.0.0.1,localhost" "no_proxy=127.0.0.1,localhost"
  HF_HUB_OFFLINE=1 DO_NOT_TRACK=1 DISABLE_ADMIN_UI=True
)

start_litellm() { # sets LITELLM (host:port) and LITELLM_PGID, or returns 1
  cat >"$WORK/litellm.yaml" <<EOF
# Generated by bench/run-llm.sh: no master key, no database, no callbacks.
model_list:
  - model_name: standin-llm
    litellm_params:
      model: openai/standin-llm
      api_base: http://$STANDIN/v1
      api_key: none
  - model_name: standin-fast
    litellm_params:
      model: openai/standin-fast
      api_base: http://$FAST/v1
      api_key: none
litellm_settings:
  telemetry: false
EOF
  # uvicorn's per-request access log off, as Citadel's per-request lines are.
  cat >"$WORK/uvicorn-log.json" <<'EOF'
{"version": 1, "disable_existing_loggers": false,
 "formatters": {"default": {"()": "uvicorn.logging.DefaultFormatter", "fmt": "%(levelprefix)s %(message)s"}},
 "handlers": {"default": {"formatter": "default", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"}},
 "loggers": {"uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": false},
             "uvicorn.access": {"handlers": ["default"], "level": "WARNING", "propagate": false}}}
EOF
  local port
  port=$(free_port)
  start "$WORK/litellm.log" env -u DATABASE_URL "${LITELLM_ENV[@]}" "$VENV/bin/litellm" \
    --config "$WORK/litellm.yaml" --host 127.0.0.1 --port "$port" --num_workers 1 \
    --telemetry False --log_config "$WORK/uvicorn-log.json"
  LITELLM_PGID=$STARTED
  local deadline=$((SECONDS + READY_TIMEOUT))
  while ((SECONDS < deadline)); do
    if curl -fs -o /dev/null "http://127.0.0.1:$port/health/liveliness"; then
      LITELLM=127.0.0.1:$port
      return 0
    fi
    kill -0 "$LITELLM_PGID" 2>/dev/null || break
    sleep 0.5
  done
  log "LiteLLM did not become ready; last lines of $WORK/litellm.log:"
  tail -n 15 "$WORK/litellm.log" >&2 || true
  stop_group "$LITELLM_PGID"
  forget_group "$LITELLM_PGID"
  return 1
}

# ---------------------------------------------------------------------------- 4. answers
answer_text() { # answer_text FILE: the assistant text of an SSE stream or a unary answer
  python3 - "$1" <<'EOF'
import json, sys
raw = open(sys.argv[1], encoding="utf-8").read()
if raw.lstrip().startswith("{"):
    print(json.loads(raw)["choices"][0]["message"]["content"], end="")
    sys.exit()
text, done = [], False
for line in raw.splitlines():
    if not line.startswith("data:"):
        continue
    data = line[5:].strip()
    if data == "[DONE]":
        done = True
        continue
    event = json.loads(data)
    assert "error" not in event, f"error event: {data}"
    for choice in event.get("choices", []):
        text.append((choice.get("delta") or {}).get("content") or "")
assert done, "no data: [DONE]"
print("".join(text), end="")
EOF
}

check_answers() { # check_answers LEG STREAM_BASE UNARY_BASE: one answer of each, as direct's
  local leg=$1 kind url deadline=$((SECONDS + 15))
  # A gateway may still be reading its servers' model lists just after it said it was ready.
  until curl -fsS -o /dev/null -H 'content-type: application/json' \
    --data-binary "@$WORK/unary.json" "$3/v1/chat/completions" 2>/dev/null; do
    ((SECONDS < deadline)) || break
    sleep 0.5
  done
  for kind in stream unary; do
    url=$2
    [[ $kind == unary ]] && url=$3
    curl -fsSN --max-time 30 -H 'content-type: application/json' --data-binary "@$WORK/$kind.json" \
      "$url/v1/chat/completions" >"$WORK/answer-$leg-$kind.txt" || {
      log "$leg: the $kind request failed"
      return 1
    }
    answer_text "$WORK/answer-$leg-$kind.txt" >"$WORK/text-$leg-$kind.txt" || {
      log "$leg: the $kind answer is malformed; see $WORK/answer-$leg-$kind.txt"
      return 1
    }
    if [[ $leg != direct ]] && ! cmp -s "$WORK/text-direct-$kind.txt" "$WORK/text-$leg-$kind.txt"; then
      log "$leg: the $kind answer's text differs from the stand-in's; see $WORK/text-$leg-$kind.txt"
      return 1
    fi
  done
}

# ---------------------------------------------------------------------------- 5. load
stat_of() { curl -fsS "http://$1/_standin/stats" | jq ".$2"; }

drain() { # drain UNARY_BASE: wait until the server is idle again; prints the seconds waited
  # Idle: neither stand-in has a request in flight and a unary request through the server is
  # answered within half a second. After an overload a gateway may still be working through
  # requests whose clients are gone, some of which have not reached a stand-in yet.
  local start=$SECONDS deadline=$((SECONDS + DRAIN_TIMEOUT)) took
  while ((SECONDS < deadline)); do
    if (($(stat_of "$STANDIN" in_flight) + $(stat_of "$FAST" in_flight) == 0)); then
      took=$(curl -fsS -o /dev/null -w '%{time_total}' --max-time 5 -H 'content-type: application/json' \
        --data-binary "@$WORK/unary.json" "$1/v1/chat/completions" 2>/dev/null || echo 99)
      if awk -v t="$took" 'BEGIN { exit !(t < 0.5) }'; then
        echo $((SECONDS - start))
        return
      fi
    fi
    sleep 0.5
  done
  log "WARNING: still busy after ${DRAIN_TIMEOUT}s; measuring anyway"
  echo $((SECONDS - start))
}

# rss_sampler PGID WARMUP DURATION STANDIN_PGID: the process group's summed VmRSS (kB) before the
# load and at its peak (every 200 ms), and the CPU it (and the stand-in, when that is another
# group) used in the measured window (after WARMUP s), in cores
rss_sampler() {
  python3 - "$1" "$2" "$3" "$4" <<'EOF'
import json, os, sys, time
pgid, warmup, duration, standin = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
tick = os.sysconf("SC_CLK_TCK")
def group(pgid=pgid):
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.getpgid(int(pid)) == pgid:
                    yield pid
            except OSError:
                pass
def rss():
    total = 0
    for pid in group():
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
        except (OSError, StopIteration, ValueError):
            pass
    return total
def cpu(pgid=pgid):
    total = 0
    for pid in group(pgid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total / tick
begin = time.monotonic()
idle = rss()
peak, samples, cpu_from = idle, 1, None
while True:
    now = time.monotonic() - begin
    if cpu_from is None and now >= warmup:
        cpu_from, standin_from, t_from = cpu(), cpu(standin), now
    if now >= warmup + duration:
        cpu_to, standin_to, t_to = cpu(), cpu(standin), now
        break
    time.sleep(0.2)
    peak, samples = max(peak, rss()), samples + 1
cores = lambda a, b: round((b - a) / max(t_to - t_from, 1e-9), 3)
out = {"rss_idle_kb": idle, "rss_peak_kb": peak, "rss_samples": samples,
       "server_cpu_cores": cores(cpu_from, cpu_to)}
if standin != pgid:
    out["standin_cpu_cores"] = cores(standin_from, standin_to)
print(json.dumps(out))
EOF
}

record() { # record LEG TEST EXTRA_JSON: tags the JSON line on stdin into $RAW, logs a summary
  jq -c --arg leg "$1" --arg test "$2" --argjson extra "$3" '{leg: $leg, test: $test} + $extra + .' >>"$RAW"
  log "$(tail -n1 "$RAW" | jq -r 'if .mode == "closed"
    then "\(.leg) \(.test): \(.rps) req/s, p50 \(.p50_us) us, p99 \(.p99_us) us, errors \(.errors)"
    else "\(.leg) \(.test): TTFT p50 \(.ttft_p50_us) us, p99 \(.ttft_p99_us) us, \(.chunks_per_s) chunks/s, \(.streams_completed) streams, errors \(.errors)+\(.warmup_errors) (warm-up)" end')"
}

# stream_test LEG TEST PGID UNARY_BASE FLAGS...: one citadel-streamgen run, with the server's RSS and
# CPU (and the stream stand-in's CPU) sampled alongside, tagged into $RAW
stream_test() {
  local leg=$1 test=$2 pgid=$3 unary=$4 drained before sampler extra out
  shift 4
  drained=$(drain "$unary")
  before=$(stat_of "$STANDIN" streams)
  rss_sampler "$pgid" "$WARMUP" "$DURATION" "$STANDIN_PGID" >"$WORK/sampled-$leg-$test.json" &
  sampler=$!
  out=$("$BIN/citadel-streamgen" --url "$STREAM_URL" --body-file "$WORK/stream.json" \
    --duration "$DURATION" --warmup "$WARMUP" --timeout-ms "$STREAM_TIMEOUT_MS" "$@")
  wait "$sampler" || echo '{}' >"$WORK/sampled-$leg-$test.json"
  extra=$(jq -c --argjson d "$drained" --argjson s "$(($(stat_of "$STANDIN" streams) - before))" \
    '. + {drained_s: $d, upstream_streams: $s}' "$WORK/sampled-$leg-$test.json")
  record "$leg" "$test" "$extra" <<<"$out"
}

load() { # load LEG STREAM_BASE UNARY_BASE PGID: every scenario, one JSON line each into $RAW
  local leg=$1 unary=$3 pgid=$4 rate out drained before
  STREAM_URL=$2/v1/chat/completions
  if has rate "$SCENARIOS"; then
    for rate in $RATES; do
      stream_test "$leg" "rate:$rate" "$pgid" "$unary" --mode rate --rate "$rate"
    done
  fi
  if has concurrent "$SCENARIOS"; then
    stream_test "$leg" "concurrent:$STREAMS" "$pgid" "$unary" --mode concurrent --streams "$STREAMS"
  fi
  if has unary "$SCENARIOS"; then
    drained=$(drain "$unary")
    before=$(stat_of "$FAST" requests)
    out=$("$BIN/citadel-loadgen" --url "$unary/v1/chat/completions" --body-file "$WORK/unary.json" \
      --duration "$DURATION" --warmup "$WARMUP" --mode closed --concurrency "$CONCURRENCY" \
      --expect '"content"')
    record "$leg" unary "$(jq -cn --argjson d "$drained" --argjson s "$(($(stat_of "$FAST" requests) - before))" \
      '{drained_s: $d, upstream_requests: $s}')" <<<"$out"
  fi
}

log "(a) direct"
# Streams go to the paced stand-in, unary requests to the fast one (a gateway routes by model).
check_answers direct "http://$STANDIN" "http://$FAST" || die "the stand-ins' own answers are malformed"
load direct "http://$STANDIN" "http://$FAST" "$STANDIN_PGID"

if has citadel "$LEGS"; then
  if ((CITADEL_BUILT)) && start_citadel; then
    log "(b) citadel on http://$CITADEL"
    if check_answers citadel "http://$CITADEL" "http://$CITADEL"; then
      load citadel "http://$CITADEL" "http://$CITADEL" "$CITADEL_PGID"
    else
      FAILED+=(citadel)
    fi
    stop_group "$CITADEL_PGID"
    forget_group "$CITADEL_PGID"
  else
    FAILED+=(citadel)
  fi
fi

if has litellm "$LEGS"; then
  if start_litellm; then
    log "(c) LiteLLM, 1 worker, on http://$LITELLM"
    if check_answers litellm "http://$LITELLM" "http://$LITELLM"; then
      load litellm "http://$LITELLM" "http://$LITELLM" "$LITELLM_PGID"
    else
      FAILED+=(litellm)
    fi
    stop_group "$LITELLM_PGID"
    forget_group "$LITELLM_PGID"
  else
    FAILED+=(litellm)
  fi
fi

# ---------------------------------------------------------------------------- 6. report
OUT=$RESULTS_DIR/llm-$(date -u +%Y-%m-%d).json
PARAMS=$(jq -cn --arg pin "$LITELLM_PIN" --arg load "$LOADAVG_START" --arg failed "${FAILED[*]:-}" \
  --argjson duration "$DURATION" --argjson warmup "$WARMUP" --arg rates "$RATES" \
  --argjson streams "$STREAMS" --argjson concurrency "$CONCURRENCY" --arg scenarios "$SCENARIOS" \
  --arg legs "$LEGS" --argjson ttft "$TTFT_MS" --argjson itl "$ITL_MS" --argjson tokens "$TOKENS" \
  --argjson timeout "$STREAM_TIMEOUT_MS" --argjson fds "$FDS" \
  '{litellm: $pin, loadavg_at_start: ($load | split(" ")), failed_legs: ($failed | split(" ") | map(select(. != ""))),
    legs: ($legs | split(" ") | map(select(. != ""))), open_files_limit: $fds,
    standin: {ttft_ms: $ttft, itl_ms: $itl, tokens: $tokens, unary: {ttft_ms: 0, itl_ms: 0, tokens: 16}},
    load: {duration_s: $duration, warmup_s: $warmup, rates: ($rates | split(" ") | map(select(. != "") | tonumber)),
           streams: $streams, concurrency: $concurrency, scenarios: $scenarios,
           stream_timeout_ms: $timeout, loadgen_threads: 1}}')
python3 - "$RAW" "$OUT" "$PARAMS" "$WORK/fatal" <<'EOF'
import json, os, platform, subprocess, sys
from datetime import datetime, timezone

raw, out, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
runs = [json.loads(line) for line in open(raw) if line.strip()]
git = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True).stdout.strip()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
find = lambda leg, test: next((r for r in runs if (r["leg"], r["test"]) == (leg, test)), None)
legs = list(dict.fromkeys(r["leg"] for r in runs))
ms = lambda us: round(us / 1000, 3)
mb = lambda kb: round(kb * 1024 / 1e6, 1)
ratio = lambda a, b: round(a / b, 4) if b else None
fmt_ratio = lambda x: f"{x:.3f}x" if x is not None else "-"
# CPU cores busy in the measured window: the server (for direct: the stand-in), the stream
# stand-in behind a gateway, the load generator.
cpu_of = lambda r: {k: r.get(f"{k}_cpu_cores") for k in ("server", "standin", "client")}
fmt_cpu = lambda c: " / ".join("-" if c[k] is None else f"{c[k]:.2f}" for k in ("server", "standin", "client"))
# The server's CPU time per content chunk delivered, microseconds.
per_chunk = lambda r: round(r["server_cpu_cores"] * 1e6 / r["chunks_per_s"], 1) if r.get("server_cpu_cores") is not None and r["chunks_per_s"] else None
fmt_us = lambda v: "-" if v is None else f"{v:.1f}"
# Failed streams or requests that count: every direct and Citadel one (warm-up included).
fatal = sum(r["errors"] + r.get("warmup_errors", 0) for r in runs if not r["leg"].startswith("litellm"))
md, scenarios = [], {"rates": {}, "concurrent": {}, "unary": {}}
load = params["load"]

rate_tests = sorted({r["test"] for r in runs if r["test"].startswith("rate:")}, key=lambda t: float(t[5:]))
for test in rate_tests:
    rate = float(test[5:])
    d, rows = find("direct", test), {}
    md += [f"\n### Open loop at {rate:g} new streams/s ({load['warmup_s']:g} s + {load['duration_s']:g} s)\n",
           "TTFT from each stream's scheduled start to its first content chunk; ms; added = minus direct.\n",
           "| leg | TTFT p50 | p90 | p99 | added p50 | added p99 | stream p50 | stream p99 | completed | errors | CPU server / stand-in / client | server CPU us/chunk |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for leg in legs:
        r = find(leg, test)
        if not r:
            continue
        row = {k: ms(r[f"{k}_us"]) for k in ("ttft_p50", "ttft_p90", "ttft_p99", "ttft_max", "stream_p50", "stream_p90", "stream_p99")}
        row.update(streams_started=r["streams_started"], streams_completed=r["streams_completed"],
                   streams_per_s=r["streams_per_s"], errors=r["errors"], warmup_errors=r["warmup_errors"],
                   timeouts=r["timeouts"], upstream_streams_per_stream=ratio(r["upstream_streams"], r["streams_started"] + r["warmup_streams"]),
                   drained_s=r["drained_s"], cpu_cores=cpu_of(r), server_cpu_us_per_chunk=per_chunk(r))
        # Not keeping up: fewer streams finished than were started, or the first chunk waited
        # far longer than direct's.
        row["overloaded"] = bool(r["streams_completed"] < 0.95 * r["streams_started"]
                                 or (d and r["ttft_p50_us"] - d["ttft_p50_us"] > 100_000))
        if d and leg != "direct":
            row["added_ttft_p50"] = ms(r["ttft_p50_us"] - d["ttft_p50_us"])
            row["added_ttft_p99"] = ms(r["ttft_p99_us"] - d["ttft_p99_us"])
        rows[leg] = row
        added = f"{row['added_ttft_p50']:+.3f} | {row['added_ttft_p99']:+.3f}" if "added_ttft_p50" in row else "- | -"
        note = " (overloaded)" if row["overloaded"] else ""
        errors = f"{r['errors']}" + (f" ({r['timeouts']} time-outs)" if r["timeouts"] else "")
        md.append(f"| {leg}{note} | {row['ttft_p50']:.3f} | {row['ttft_p90']:.3f} | {row['ttft_p99']:.3f} | {added} | "
                  f"{row['stream_p50']:.1f} | {row['stream_p99']:.1f} | {r['streams_completed']}/{r['streams_started']} | {errors} | "
                  f"{fmt_cpu(row['cpu_cores'])} | {fmt_us(row['server_cpu_us_per_chunk'])} |")
    scenarios["rates"][test] = rows

for test in sorted({r["test"] for r in runs if r["test"].startswith("concurrent:")}):
    n = int(test.split(":")[1])
    d, rows = find("direct", test), {}
    md += [f"\n### {n:,} concurrent streams ({load['warmup_s']:g} s + {load['duration_s']:g} s)\n",
           "Content chunks delivered per second over all streams; TTFT from the send, ms; RSS of the server's process group "
           "(direct: the stand-in), MB, before the load and at its peak; CPU in cores.\n",
           "| leg | chunks/s | vs direct | streams/s | TTFT p50 | TTFT p99 | stream p50 | errors | no first chunk at the end | RSS idle | RSS peak | CPU server / stand-in / client | server CPU us/chunk |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for leg in legs:
        r = find(leg, test)
        if not r:
            continue
        vs = ratio(r["chunks_per_s"], d["chunks_per_s"]) if d else None
        row = {"chunks_per_s": r["chunks_per_s"], "vs_direct": vs, "streams_per_s": r["streams_per_s"],
               "ttft_p50": ms(r["ttft_p50_us"]), "ttft_p99": ms(r["ttft_p99_us"]), "stream_p50": ms(r["stream_p50_us"]),
               "errors": r["errors"], "warmup_errors": r["warmup_errors"], "waiting_first_chunk": r["waiting_first_chunk"],
               "rss_idle_mb": mb(r["rss_idle_kb"]) if "rss_idle_kb" in r else None,
               "rss_peak_mb": mb(r["rss_peak_kb"]) if "rss_peak_kb" in r else None,
               "drained_s": r["drained_s"], "cpu_cores": cpu_of(r), "server_cpu_us_per_chunk": per_chunk(r)}
        rows[leg] = row
        rss = lambda k: f"{row[k]:.1f}" if row[k] is not None else "-"
        md.append(f"| {leg} | {r['chunks_per_s']:,.0f} | {fmt_ratio(vs)} | {r['streams_per_s']:g} | {row['ttft_p50']:.3f} | "
                  f"{row['ttft_p99']:.3f} | {row['stream_p50']:.1f} | {r['errors']} | {r['waiting_first_chunk']} | "
                  f"{rss('rss_idle_mb')} | {rss('rss_peak_mb')} | {fmt_cpu(row['cpu_cores'])} | {fmt_us(row['server_cpu_us_per_chunk'])} |")
    scenarios["concurrent"][test] = rows

if any(r["test"] == "unary" for r in runs):
    d, rows = find("direct", "unary"), {}
    md += [f"\n### Unary saturation (\"stream\": false, no upstream delay, 16 tokens; closed loop, {load['concurrency']} connections)\n",
           "| leg | req/s | vs direct | p50 ms | p99 ms | errors |", "|---|---:|---:|---:|---:|---:|"]
    for leg in legs:
        r = find(leg, "unary")
        if not r:
            continue
        vs = ratio(r["rps"], d["rps"]) if d else None
        rows[leg] = {"rps": r["rps"], "vs_direct": vs, "p50": ms(r["p50_us"]), "p99": ms(r["p99_us"]),
                     "errors": r["errors"], "upstream_requests_per_request": ratio(r["upstream_requests"], r["requests"] + r["warmup_requests"])}
        md.append(f"| {leg} | {r['rps']:,.0f} | {fmt_ratio(vs)} | {ms(r['p50_us']):.3f} | {ms(r['p99_us']):.3f} | {r['errors']} |")
    if "citadel" in rows and rows.get("litellm", {}).get("rps"):
        scenarios["unary"]["citadel_over_litellm_rps"] = round(rows["citadel"]["rps"] / rows["litellm"]["rps"], 1)
        md.append(f"\nCitadel / LiteLLM: **{scenarios['unary']['citadel_over_litellm_rps']}x**")
    scenarios["unary"]["legs"] = rows

def check(value, ok):
    return None if value is None else bool(ok(value))
top = rate_tests[-1] if rate_tests else None
cit_rate = scenarios["rates"].get(top, {}).get("citadel", {}) if top else {}
conc = next(iter(scenarios["concurrent"].values()), {})
cit_conc = conc.get("citadel", {})
targets = {
    "rate": top,
    "citadel_added_ttft_p99_ms": cit_rate.get("added_ttft_p99"),
    "citadel_added_ttft_p99_below_1ms": check(cit_rate.get("added_ttft_p99"), lambda v: v < 1.0),
    "citadel_chunks_vs_direct": cit_conc.get("vs_direct"),
    "citadel_chunks_at_least_0.9x_direct": check(cit_conc.get("vs_direct"), lambda v: v >= 0.9),
    "citadel_rss_peak_mb": cit_conc.get("rss_peak_mb"),
    "citadel_rss_idle_mb": cit_conc.get("rss_idle_mb"),
    "citadel_rss_below_200mb": check(cit_conc.get("rss_peak_mb"), lambda v: v < 200),
    "citadel_over_litellm_unary": scenarios["unary"].get("citadel_over_litellm_rps"),
    "citadel_at_least_20x_litellm_unary": check(scenarios["unary"].get("citadel_over_litellm_rps"), lambda v: v >= 20),
}
result = {
    "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    "commit": git("rev-parse", "--short", "HEAD") + ("-dirty" if git("status", "--porcelain") else ""),
    "machine": {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
                "loadavg_at_start": params["loadavg_at_start"],
                "loadavg_at_end": open("/proc/loadavg").read().split()[:3]},
    **{k: params[k] for k in ("litellm", "legs", "standin", "load", "failed_legs", "open_files_limit")},
    "targets": targets, "scenarios": scenarios, "runs": runs,
}
with open(out, "w") as f:
    json.dump(result, f, indent=1)
print("\n".join(md).lstrip("\n"))
mark = lambda ok: "n/a" if ok is None else ("met" if ok else "NOT met")
num = lambda v, f: "-" if v is None else f.format(v)
print(f"\n**Targets**: added TTFT p99 at {top and top[5:]} streams/s {num(targets['citadel_added_ttft_p99_ms'], '{:+.3f} ms')} "
      f"(< 1 ms: {mark(targets['citadel_added_ttft_p99_below_1ms'])}); "
      f"chunks/s at {load['streams']:,} streams {num(targets['citadel_chunks_vs_direct'], '{:.3f}x')} direct "
      f"(>= 0.9x: {mark(targets['citadel_chunks_at_least_0.9x_direct'])}); "
      f"Citadel RSS peak {num(targets['citadel_rss_peak_mb'], '{:.1f} MB')}, {num(targets['citadel_rss_idle_mb'], '{:.1f} MB')} before the load "
      f"(< 200 MB: {mark(targets['citadel_rss_below_200mb'])}); "
      f"unary {num(targets['citadel_over_litellm_unary'], '{:.1f}x')} LiteLLM (>= 20x: {mark(targets['citadel_at_least_20x_litellm_unary'])}).")
print(f"\nmachine: {os.cpu_count()} x {cpu}, load average {' '.join(params['loadavg_at_start'])} at start, "
      f"{' '.join(result['machine']['loadavg_at_end'])} at the end; stand-in TTFT {params['standin']['ttft_ms']} ms, "
      f"ITL {params['standin']['itl_ms']} ms, {params['standin']['tokens']} tokens; open files limit {params['open_files_limit']}.")
with open(sys.argv[4], "w") as f:
    print(fatal, file=f)
EOF
FATAL=$(cat "$WORK/fatal")
log "results: $OUT (per-run files: $WORK)"
if ((${#FAILED[@]})); then
  log "FAILED legs: ${FAILED[*]}"
  exit 1
fi
if ((FATAL > 0)); then
  log "FAILED: $FATAL direct or Citadel streams/requests failed (see $WORK/runs.jsonl)"
  exit 1
fi
log "done"
