#!/usr/bin/env bash
# Upstream routing in one command (`make bench-upstream` calls it): the same fast stand-in
# OpenAI-compatible server (`citadel-standin`, POST /v1/embeddings) measured in one run
#   (a) direct    loadgen -> stand-in
#   (b) citadel   loadgen -> citadel serve (model backend "openai") -> stand-in; the edge calls
#                 the mesh in memory (the default), and, as leg citadel-loopback, over a
#                 loopback gRPC channel (grpc.upstream set to its own port), to show that hop;
#                 with auth required, as leg citadel-jwt (a Clerk-style RS256 session token,
#                 networkless PEM key) and leg citadel-key (an API key from `citadel keys`
#                 with requests- and tokens-per-minute limits counted in Redis); and as leg
#                 citadel-traced, every request traced (100 % sampled) and exported over
#                 OTLP/gRPC to a counting stand-in collector (`citadel-otlp-sink`)
#   (c) litellm   loadgen -> LiteLLM proxy (1 worker, then 2 workers) -> stand-in
# with the same load for each (`citadel-loadgen`, crates/standin/src/bin/citadel-loadgen.rs):
#   closed  saturation: BENCH_CONCURRENCY keep-alive connections, one request in flight each
#   rate    open loop at fixed rates over BENCH_CONNECTIONS connections; latency from each
#           request's scheduled send time (no coordinated omission), service time from the send
# Scenarios (BENCH_SCENARIOS, "INPUTS:RATE,RATE ..."): 1 input at 200 and 50 req/s, 16 inputs
# at 50 and 20 req/s. Every body is {"model":"all-minilm","input":[...]}: a 13-word sentence.
#
# Steps: 1. .venv/litellm with a pinned litellm[proxy] (created once, reused)
#        2. cargo build --release: stand-in + loadgen, then citadel (leg (b) is skipped, and the
#           run fails, if citadel does not build or start)
#        3. the stand-in; citadel and LiteLLM in turn, each with a generated config; LiteLLM with
#           every remote fetch switched off and a dead loopback proxy for anything else
#        4. load; 5. bench/results/upstream-<date>.json + Markdown on stdout (per-run files in
#           target/bench/upstream/). An EXIT trap stops every process this script started.
# Exits non-zero when a leg could not run or a request failed, except the time-outs of a LiteLLM
# leg offered more than it can serve (reported as "overloaded": its requests waited in the
# client's queue more than 10 ms at the median).
# Environment: BENCH_DURATION (s, 10), BENCH_WARMUP (s, 2), BENCH_CONCURRENCY (32),
# BENCH_CONNECTIONS (16), BENCH_SCENARIOS ("1:500,100 16:50,20"), BENCH_LITELLM_WORKERS ("1 2"),
# BENCH_MESH_LEGS ("in-process loopback jwt key traced": the Citadel legs; jwt and key need openssl,
# and key a Redis on BENCH_REDIS_URL, redis://127.0.0.1:6379),
# BENCH_NICE (-10: priority of the servers and the loadgen, as root), BENCH_READY_TIMEOUT (s, 120),
# BENCH_PYTHON (the python3 that creates the venv), CARGO.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# 1.103+ needs certifi>=2026.10.19, which the package index here does not serve yet.
LITELLM_PIN='litellm[proxy]==1.102.4'
VENV=.venv/litellm
WORK=target/bench/upstream
RESULTS_DIR=bench/results
DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-2}
CONCURRENCY=${BENCH_CONCURRENCY:-32}
CONNECTIONS=${BENCH_CONNECTIONS:-16}
SCENARIOS=${BENCH_SCENARIOS:-"1:500,100 16:50,20"}
MESH_LEGS=${BENCH_MESH_LEGS:-"in-process loopback jwt key traced"}
REDIS_URL=${BENCH_REDIS_URL:-redis://127.0.0.1:6379}
LITELLM_WORKERS=${BENCH_LITELLM_WORKERS:-"1 2"}
READY_TIMEOUT=${BENCH_READY_TIMEOUT:-120}
CARGO=${CARGO:-cargo}
BIN=target/release
SENTENCE='The quick brown fox jumps over the lazy dog beside the quiet river'
INPUTS=$(for s in $SCENARIOS; do printf '%s ' "${s%%:*}"; done)

LOG_TAG=bench-upstream
PGID_FILE=target/bench/upstream.pgids
# shellcheck source=bench/lib.sh
source bench/lib.sh
require curl jq python3 setsid openssl

# ---------------------------------------------------------------------------- processes
on_exit() {
  local rc=$?
  stop_all_groups
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
reap_stale_groups 'citadel-standin|release/citadel|bin/litellm'

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
# Only the LiteLLM legs need it.
[[ -n $LITELLM_WORKERS ]] && ensure_venv

# ---------------------------------------------------------------------------- 2. build
log "building the stand-in and the load generator"
"$CARGO" build --release -p citadel-standin --bins
CITADEL_BUILT=1
log "building citadel"
if ! "$CARGO" build --release --bin citadel; then
  log "WARNING: citadel did not build; leg (b) is skipped"
  CITADEL_BUILT=0
fi

# ---------------------------------------------------------------------------- 3. servers
# Everything started from here on (servers, load generator) inherits this priority, so that a
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

for n in $INPUTS; do
  jq -cn --arg s "$SENTENCE" --argjson n "$n" \
    '{model: "all-minilm", input: [range($n) | "\($s) \(. + 1)."]}' >"$WORK/body-$n.json"
done

start "$WORK/standin.log" "$BIN/citadel-standin" --addr 127.0.0.1:0 --model all-minilm=384
STANDIN_PGID=$STARTED
STANDIN=$(listening_addr "$WORK/standin.log" "standin listening on" "the stand-in")
log "stand-in on http://$STANDIN (pid $STANDIN_PGID)"
OTLP=
if [[ " $MESH_LEGS " == *" traced "* ]]; then
  start "$WORK/otlp-sink.log" "$BIN/citadel-otlp-sink" --addr 127.0.0.1:0
  OTLP_PGID=$STARTED
  OTLP=$(listening_addr "$WORK/otlp-sink.log" "otlp sink listening on" "the OTLP sink")
  log "OTLP sink on http://$OTLP (pid $OTLP_PGID)"
fi
LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average before the run: $LOADAVG_START (other work on these 2 cores skews every figure)"

AUTH= # the Authorization header of the current Citadel leg, if any

start_citadel() { # start_citadel MESH [GRPC_PORT]: sets CITADEL (host:port) and AUTH, or returns 1
  local mesh=$1 grpc_port=${2:-} redis=
  AUTH=
  [[ $mesh == key ]] && redis=$REDIS_URL
  cat >"$WORK/citadel.toml" <<EOF
# Generated by bench/run-upstream.sh. all-minilm is served by the stand-in, under the same name.
# Per-request INFO lines (tower-http) stay off the hot path; only "citadel ready" is needed.
[log]
level = "warn,citadel::serve=info"

[models.all-minilm]
backend = "openai"
endpoints = [{ url = "http://$STANDIN/v1" }]
upstream_model = "all-minilm"
dimensions = 384
max_input_tokens = 256

[models."all-minilm:int8"]
enabled = false

# Every request must reach the stand-in: the benchmark repeats one body. (Redis, when set,
# holds the key leg's rate limits only.)
[cache]
mode = "off"
redis_url = "$redis"
key_prefix = "citadel-bench-$$"

[database]
url = "sqlite://$PWD/$WORK/citadel-$mesh.db?mode=rwc"
EOF
  case $mesh in
    traced)
      # Every request traced (sample_ratio 1.0) and exported to a counting OTLP collector.
      printf '\n[telemetry]\notlp_endpoint = "http://%s"\nsample_ratio = 1.0\n' "$OTLP" >>"$WORK/citadel.toml"
      ;;
    jwt)
      AUTH="Bearer $(make_jwt "$WORK")"
      cat >>"$WORK/citadel.toml" <<EOF

[auth]
mode = "required"
issuer = "https://clerk.bench.test"
default_role = "member"
public_key_pem = '''
$(cat "$WORK/jwt.pub")'''
EOF
      ;;
    key)
      printf '\n[auth]\nmode = "required"\n' >>"$WORK/citadel.toml"
      # Limits far above what this machine serves: every request runs the Redis script and
      # debits its tokens, none is refused.
      AUTH="Bearer $(CITADEL_DATABASE__URL="sqlite://$PWD/$WORK/citadel-$mesh.db?mode=rwc" \
        "$BIN/citadel" keys create --name bench --role member --rpm 100000000 --tpm 1000000000 | tail -n1)"
      ;;
  esac
  if [[ -n $grpc_port ]]; then
    printf '\n[grpc]\nupstream = "http://127.0.0.1:%s"\n' "$grpc_port" >>"$WORK/citadel.toml"
    start_citadel_with "$WORK/citadel.toml" "$WORK/citadel-loopback.log" "127.0.0.1:$grpc_port"
  else
    start_citadel_with "$WORK/citadel.toml" "$WORK/citadel.log"
  fi
}

# LiteLLM reads these at import or start-up; each stops a fetch from the internet (model cost
# map, blog posts, Anthropic beta headers, auto-router presets, policy templates). Anything
# else is sent to a dead loopback proxy; the stand-in is reached directly (NO_PROXY).
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

start_litellm() { # start_litellm WORKERS: sets LITELLM (host:port) or returns 1
  cat >"$WORK/litellm.yaml" <<EOF
# Generated by bench/run-upstream.sh: no master key, no database, no callbacks.
model_list:
  - model_name: all-minilm
    litellm_params:
      model: openai/all-minilm
      api_base: http://$STANDIN/v1
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
  start "$WORK/litellm-$1w.log" env -u DATABASE_URL "${LITELLM_ENV[@]}" "$VENV/bin/litellm" \
    --config "$WORK/litellm.yaml" --host 127.0.0.1 --port "$port" --num_workers "$1" \
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
  log "LiteLLM ($1 workers) did not become ready; last lines of $WORK/litellm-$1w.log:"
  tail -n 15 "$WORK/litellm-$1w.log" >&2 || true
  stop_group "$LITELLM_PGID"
  forget_group "$LITELLM_PGID"
  return 1
}

# ---------------------------------------------------------------------------- 4. load
check_answer() { # check_answer LEG URL: one request per scenario; same vectors as the stand-in's
  local leg=$1 url=$2 n
  for n in $INPUTS; do
    curl -fsS -H 'content-type: application/json' ${AUTH:+-H "authorization: $AUTH"} \
      --data-binary "@$WORK/body-$n.json" "$url" >"$WORK/answer-$leg-$n.json" || return 1
    python3 - "$WORK/answer-direct-$n.json" "$WORK/answer-$leg-$n.json" "$n" <<'EOF' || return 1
import json, sys
want, got = (json.load(open(p))["data"] for p in sys.argv[1:3])
assert len(got) == int(sys.argv[3]), f"{len(got)} vectors, expected {sys.argv[3]}"
for w, g in zip(sorted(want, key=lambda d: d["index"]), sorted(got, key=lambda d: d["index"])):
    assert len(g["embedding"]) == 384, f"{len(g['embedding'])} dimensions"
    diff = max(abs(a - b) for a, b in zip(w["embedding"], g["embedding"]))
    assert diff < 1e-5, f"vector {g['index']} differs from the stand-in's by {diff}"
EOF
  done
}

upstream_calls() { curl -fsS "http://$STANDIN/_standin/stats" | jq .requests; }

load() { # load LEG URL: every test of every scenario, one JSON line each into $RAW
  local leg=$1 url=$2 scenario n rates rate out before
  for scenario in $SCENARIOS; do
    n=${scenario%%:*}
    local tests=("--mode closed --concurrency $CONCURRENCY")
    rates=${scenario#*:}
    for rate in ${rates//,/ }; do
      tests+=("--mode rate --rate $rate --connections $CONNECTIONS")
    done
    local test
    for test in "${tests[@]}"; do
      before=$(upstream_calls)
      # shellcheck disable=SC2086 # $test is a list of flags
      out=$("$BIN/citadel-loadgen" --url "$url" --body-file "$WORK/body-$n.json" \
        ${AUTH:+--header "authorization: $AUTH"} --duration "$DURATION" --warmup "$WARMUP" $test)
      # Calls the stand-in received per request sent (warm-up included): about 1.0 when every
      # request went upstream; Citadel's probes add a handful.
      jq -c --arg leg "$leg" --argjson inputs "$n" --argjson calls "$(($(upstream_calls) - before))" \
        '{leg: $leg, inputs: $inputs, test: (if .mode == "closed" then "closed" else "rate:\(.rate)" end),
          upstream_calls_per_request: ($calls / (.requests + .warmup_requests) * 1000 | round / 1000)} + .' \
        <<<"$out" >>"$RAW"
      log "$(tail -n1 "$RAW" | jq -r '"\(.leg) inputs=\(.inputs) \(.test): \(.rps) req/s, p50 \(.p50_us) us, p99 \(.p99_us) us, errors \(.errors), upstream calls/request \(.upstream_calls_per_request)"')"
    done
  done
}

for n in $INPUTS; do
  curl -fsS -H 'content-type: application/json' --data-binary "@$WORK/body-$n.json" \
    "http://$STANDIN/v1/embeddings" >"$WORK/answer-direct-$n.json"
done
log "(a) direct"
AUTH=
load direct "http://$STANDIN/v1/embeddings"

for mesh in $MESH_LEGS; do
  leg=citadel port=
  case $mesh in
    loopback) leg=citadel-loopback port=$(free_port) ;;
    jwt | key | traced) leg=citadel-$mesh ;;
  esac
  if ((CITADEL_BUILT)) && start_citadel "$mesh" $port; then
    log "(b) $leg on http://$CITADEL"
    if check_answer "$leg" "http://$CITADEL/v1/embeddings"; then
      load "$leg" "http://$CITADEL/v1/embeddings"
    else
      log "citadel's answers are wrong; see $WORK/answer-$leg-*.json"
      FAILED+=("$leg")
    fi
    stop_group "$CITADEL_PGID"
    forget_group "$CITADEL_PGID"
  else
    FAILED+=("$leg")
  fi
done
AUTH=

for w in $LITELLM_WORKERS; do
  if start_litellm "$w"; then
    log "(c) LiteLLM, $w worker(s), on http://$LITELLM"
    if check_answer "litellm-${w}w" "http://$LITELLM/v1/embeddings"; then
      load "litellm-${w}w" "http://$LITELLM/v1/embeddings"
    else
      log "LiteLLM's answers are wrong; see $WORK/answer-litellm-${w}w-*.json"
      FAILED+=("litellm-${w}w")
    fi
    stop_group "$LITELLM_PGID"
    forget_group "$LITELLM_PGID"
  else
    FAILED+=("litellm-${w}w")
  fi
done
stop_group "$STANDIN_PGID"
forget_group "$STANDIN_PGID"
if [[ -n $OTLP ]]; then
  log "OTLP sink: $(tail -n1 "$WORK/otlp-sink.log")"
  stop_group "$OTLP_PGID"
  forget_group "$OTLP_PGID"
fi

# ---------------------------------------------------------------------------- 5. report
OUT=$RESULTS_DIR/upstream-$(date -u +%Y-%m-%d).json
PARAMS=$(jq -cn --arg pin "$LITELLM_PIN" --arg load "$LOADAVG_START" --arg failed "${FAILED[*]:-}" \
  --argjson duration "$DURATION" --argjson warmup "$WARMUP" --argjson concurrency "$CONCURRENCY" \
  --argjson connections "$CONNECTIONS" --arg scenarios "$SCENARIOS" \
  '{litellm: $pin, loadavg_at_start: ($load | split(" ")), failed_legs: ($failed | split(" ") | map(select(. != ""))),
    load: {duration_s: $duration, warmup_s: $warmup, concurrency: $concurrency,
           connections: $connections, scenarios: $scenarios, loadgen_threads: 1}}')
python3 - "$RAW" "$OUT" "$PARAMS" "$WORK/fatal" <<'EOF'
import json, os, platform, subprocess, sys
from datetime import datetime, timezone

raw, out, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
runs = [json.loads(line) for line in open(raw) if line.strip()]
git = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True).stdout.strip()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
find = lambda leg, n, test: next((r for r in runs if (r["leg"], r["inputs"], r["test"]) == (leg, n, test)), None)
legs = list(dict.fromkeys(r["leg"] for r in runs))
ms = lambda us: round(us / 1000, 3)
fatal = 0  # failed requests that are not a LiteLLM leg's overload
# A request answered without a call to the stand-in (a cache, a de-duplication) is no routing.
short = [f"{r['leg']} {r['inputs']} {r['test']}: {r['upstream_calls_per_request']}" for r in runs
         if r["upstream_calls_per_request"] < 0.99]
if short:
    print("upstream calls per request below 0.99: " + "; ".join(short), file=sys.stderr)
    fatal += len(short)

scenarios, md = {}, []
for n in sorted({r["inputs"] for r in runs}):
    rps = {leg: find(leg, n, "closed")["rps"] for leg in legs if find(leg, n, "closed")}
    litellm = [leg for leg in legs if leg.startswith("litellm") and leg in rps]
    best = max(litellm, key=rps.get, default=None)
    s = {"litellm_baseline": best, "saturation": {}, "rates": {}}
    md += [f"\n### {n} input(s) per request\n", f"Saturation, closed loop, {params['load']['concurrency']} connections:\n",
           "| leg | req/s | vs direct | errors |", "|---|---:|---:|---:|"]
    for leg in legs:
        r = find(leg, n, "closed")
        if not r:
            continue
        vs = round(r["rps"] / rps["direct"], 4) if rps.get("direct") else None
        s["saturation"][leg] = {"rps": r["rps"], "vs_direct": vs, "errors": r["errors"],
                                "upstream_calls_per_request": r["upstream_calls_per_request"]}
        fatal += r["errors"]
        md.append(f"| {leg} | {r['rps']:,.0f} | {vs:.3f}x | {r['errors']} |" if vs is not None else f"| {leg} | {r['rps']:,.0f} | - | {r['errors']} |")
    # What auth (jwt, key) and tracing (traced) cost, against the plain citadel leg.
    for auth in ("citadel-jwt", "citadel-key", "citadel-traced"):
        if auth in rps and rps.get("citadel"):
            s.setdefault("cost_vs_plain", {})[auth] = {"rps_vs_plain": round(rps[auth] / rps["citadel"], 4)}
            md.append(f"\n{auth} / citadel (no auth, no traces) saturation: **{rps[auth] / rps['citadel']:.3f}x**")
    if "citadel" in rps and best and rps[best]:
        s["citadel_over_litellm_rps"] = round(rps["citadel"] / rps[best], 1)
        md.append(f"\nCitadel / LiteLLM ({best}, the better LiteLLM): **{s['citadel_over_litellm_rps']}x**")
    for test in sorted({r["test"] for r in runs if r["inputs"] == n and r["test"] != "closed"},
                       key=lambda t: -float(t[5:])):
        rate = float(test[5:])
        md += [f"\nOpen loop at {rate:g} req/s, {params['load']['connections']} connections (ms; added = minus direct):\n",
               "| leg | p50 | p90 | p99 | service p50 | service p99 | added p50 | added p99 | errors |",
               "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        d, rows = find("direct", n, test), {}
        for leg in legs:
            r = find(leg, n, test)
            if not r:
                continue
            # Not keeping up: requests wait in the client's queue (latency from the scheduled
            # time) far longer than the server takes to answer them.
            overloaded = r["p50_us"] - r["service_p50_us"] > 10_000
            row = {k: ms(r[f"{k}_us"]) for k in ("p50", "p90", "p99", "max", "service_p50", "service_p90", "service_p99")}
            row.update(achieved_rps=r["rps"], errors=r["errors"], overloaded=overloaded)
            if d and leg != "direct":
                row["added_p50"], row["added_p99"] = ms(r["p50_us"] - d["p50_us"]), ms(r["p99_us"] - d["p99_us"])
            rows[leg] = row
            if not (overloaded and leg.startswith("litellm")):
                fatal += r["errors"]
            added = f"{row['added_p50']:+.3f} | {row['added_p99']:+.3f}" if "added_p50" in row else "- | -"
            note = " (overloaded)" if overloaded else ""
            md.append(f"| {leg}{note} | {row['p50']:.3f} | {row['p90']:.3f} | {row['p99']:.3f} | "
                      f"{row['service_p50']:.3f} | {row['service_p99']:.3f} | {added} | {r['errors']} |")
        s["rates"][test] = rows
        for auth in ("citadel-jwt", "citadel-key", "citadel-traced"):
            if auth in rows and "citadel" in rows:
                cost = s.setdefault("cost_vs_plain", {}).setdefault(auth, {})
                cost[f"added_p50_ms_vs_plain@{rate:g}"] = round(rows[auth]["p50"] - rows["citadel"]["p50"], 3)
                cost[f"added_p99_ms_vs_plain@{rate:g}"] = round(rows[auth]["p99"] - rows["citadel"]["p99"], 3)
    scenarios[str(n)] = s

one = scenarios.get("1", {})
top = max(one.get("rates", {}), key=lambda t: float(t[5:]), default=None)
cit = one.get("rates", {}).get(top, {}).get("citadel") if top else None
targets = {
    "rate": top,
    "citadel_added_p99_ms": cit and cit.get("added_p99"),
    "citadel_added_p99_below_1ms": (cit["added_p99"] < 1.0) if cit and "added_p99" in cit else None,
    "citadel_over_litellm_rps": one.get("citadel_over_litellm_rps"),
    "citadel_at_least_10x_litellm": (one["citadel_over_litellm_rps"] >= 10) if "citadel_over_litellm_rps" in one else None,
}
result = {
    "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    "commit": git("rev-parse", "--short", "HEAD") + ("-dirty" if git("status", "--porcelain") else ""),
    "machine": {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
                "loadavg_at_start": params["loadavg_at_start"],
                "loadavg_at_end": open("/proc/loadavg").read().split()[:3]},
    **{k: params[k] for k in ("litellm", "load", "failed_legs")},
    "targets": targets, "scenarios": scenarios, "runs": runs,
}
with open(out, "w") as f:
    json.dump(result, f, indent=1)
print("\n".join(md))
print(f"\nmachine: {os.cpu_count()} x {cpu}, load average {' '.join(params['loadavg_at_start'])} at start; "
      f"targets (1 input): {json.dumps(targets)}")
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
  log "FAILED: $FATAL requests failed (see $WORK/runs.jsonl)"
  exit 1
fi
log "done"
