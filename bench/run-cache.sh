#!/usr/bin/env bash
# The embedding cache in one command (`make bench-cache` calls it): embeddings/s through
# POST /v1/embeddings of a release `citadel serve` (in-process all-minilm on ONNX Runtime, L1 in
# process, Redis L2 at BENCH_REDIS), BENCH_BATCH (64) inputs per request, three workloads:
#   miss    every request carries texts never seen before: the model computes all of them
#   repeat  the hot set (BENCH_HOT_BODIES bodies) again and again, after one warm-up pass
#   mix     each request 80 % texts of the hot set (after the warm-up pass), 20 % never seen
# each with L1 on (the default l1_max_bytes) and L1 off (l1_max_bytes = 0: every hit comes from
# Redis): six legs, each on a fresh `citadel serve` with its own Redis key prefix
# (citadel-bench-<pid>-<leg>), whose keys are deleted when the leg ends. Then redis-benchmark
# (GET of a 1536-byte value, a 384-dim f32 vector; without and with -P 64) for comparison.
#
# Load: `citadel-loadgen` (crates/standin/src/bin/citadel-loadgen.rs), closed loop, one tokio
# thread, each of BENCH_CONCURRENCY in turn on the same server; each request takes the next body
# of its directory (round robin). Miss and mix bodies are never sent twice: a run that would
# wrap around fails (raise BENCH_MISS_BODIES / BENCH_MIX_BODIES).
# Per run: req/s, embeddings/s, p50/p99, and the cache counters of GET /health/detailed, before
# and after (hit rate over the load, the loadgen's warm-up included); per leg: the hit rate
# Citadel reports after its load, and x-citadel-cache-hits of one sample request. Every answer
# outside the load is checked (64 vectors of 384 dims), and after each warm-up pass the cached
# vectors of one body against the ones computed for it.
#
# Steps: 1. scripts/setup-models.sh (fast when done), cargo build --release; 2. bodies;
#        3. the six legs; 4. redis-benchmark; 5. bench/results/cache-<date>.json + Markdown on
#        stdout (per-run files in target/bench/cache/). An EXIT trap stops every process this
#        script started and deletes its Redis keys.
# Exits non-zero when a leg could not run, a request failed, or an answer was wrong.
# Environment: BENCH_DURATION (s, 8), BENCH_WARMUP (s, 1; BENCH_MISS_WARMUP 3 for the miss legs),
# BENCH_CONCURRENCY ("8 16"), BENCH_BATCH (64), BENCH_HOT_SHARE (0.8), BENCH_HOT_BODIES (16),
# BENCH_MISS_BODIES (400), BENCH_MIX_BODIES (1500), BENCH_REDIS (127.0.0.1:6379),
# BENCH_REDIS_REQUESTS (200000), BENCH_READY_TIMEOUT (s, 120), CARGO.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

WORK=target/bench/cache
RESULTS_DIR=bench/results
DURATION=${BENCH_DURATION:-8}
WARMUP=${BENCH_WARMUP:-1}
# A miss request takes seconds at 16 in flight: the first wave must be answered before measuring.
MISS_WARMUP=${BENCH_MISS_WARMUP:-3}
CONCURRENCY=${BENCH_CONCURRENCY:-"8 16"}
BATCH=${BENCH_BATCH:-64}
HOT_SHARE=${BENCH_HOT_SHARE:-0.8}
HOT_BODIES=${BENCH_HOT_BODIES:-16}
MISS_BODIES=${BENCH_MISS_BODIES:-400}
MIX_BODIES=${BENCH_MIX_BODIES:-1500}
REDIS=${BENCH_REDIS:-127.0.0.1:6379}
REDIS_REQUESTS=${BENCH_REDIS_REQUESTS:-200000}
READY_TIMEOUT=${BENCH_READY_TIMEOUT:-120}
CARGO=${CARGO:-cargo}
BIN=target/release
DIMS=384
REDIS_HOST=${REDIS%:*}
REDIS_PORT=${REDIS##*:}
RUN_PREFIX=citadel-bench-$$

LOG_TAG=bench-cache
PGID_FILE=target/bench/cache.pgids
# shellcheck source=bench/lib.sh
source bench/lib.sh
require curl jq python3 setsid redis-cli redis-benchmark
rcli() { redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" "$@"; }
[[ $(rcli ping 2>&1) == PONG ]] || die "no Redis answers PING at $REDIS"

# ---------------------------------------------------------------------------- cleanup
# Servers run in their own process groups (setsid). Their groups and Redis key prefixes are also
# listed in files, so that a run killed before its trap could run has them cleaned by the next.
PREFIX_FILE=target/bench/cache.prefixes
drop_keys() { # drop_keys PREFIX: delete PREFIX:* in batches of 500
  rcli --scan --pattern "$1:*" | xargs -r -n 500 redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" del >/dev/null
}
on_exit() {
  local rc=$? p
  stop_all_groups
  if [[ -f $PREFIX_FILE ]]; then
    while read -r p; do drop_keys "$p" || true; done <"$PREFIX_FILE"
    rm -f "$PREFIX_FILE"
  fi
  exit "$rc"
}
reap_stale_groups 'release/citadel'
if [[ -f $PREFIX_FILE ]]; then
  while read -r p; do
    log "deleting Redis keys $p:* left by an earlier run"
    drop_keys "$p"
  done <"$PREFIX_FILE"
fi
: >"$PREFIX_FILE"
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------- 1. build
scripts/setup-models.sh
log "building citadel, the stand-in and the load generator"
"$CARGO" build --release -p citadel -p citadel-standin --bins

# ---------------------------------------------------------------------------- 2. bodies
rm -rf "$WORK"
mkdir -p "$WORK" "$RESULTS_DIR"
RAW=$WORK/runs.jsonl
: >"$RAW"
# hot/: the hot set, each text once. For each concurrency C: miss-C/ (every text new) and mix-C/
# (HOT_SHARE of each body drawn from the hot set, the rest new); sample-*.json: one more body of
# each kind, sent once after a leg's load to read x-citadel-cache-hits. Texts are
# "item N the <11-18 words>", N unique over the run.
# shellcheck disable=SC2086 # $CONCURRENCY is a list
python3 - "$WORK" "$BATCH" "$HOT_SHARE" "$HOT_BODIES" "$MISS_BODIES" "$MIX_BODIES" $CONCURRENCY <<'EOF'
import json, os, random, sys
work, batch, share = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
hot_bodies, miss_bodies, mix_bodies = map(int, sys.argv[4:7])
WORDS = """quick brown fox jumps over lazy dog river quiet morning evening market station
garden window paper engine signal cloud server vector cache memory network request answer
yellow green silver bright heavy gentle sudden ancient modern simple careful distant narrow
city forest mountain harbor bridge tower valley desert island meadow village castle library
reads writes builds carries follows watches measures counts sends finds keeps opens closes
under beside behind across toward through between against around before after during
teacher farmer pilot doctor painter sailor writer singer driver baker miner keeper
""".split()
rng, n = random.Random(20261121), 0
def text():
    global n
    n += 1
    return f"item {n} the " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(11, 18)))
def write(path, inputs):
    with open(path, "w") as f:
        json.dump({"model": "all-minilm", "input": inputs}, f)
os.makedirs(f"{work}/hot")
hot = [text() for _ in range(hot_bodies * batch)]
for i in range(hot_bodies):
    write(f"{work}/hot/{i:05}.json", hot[i * batch:(i + 1) * batch])
k = round(batch * share)
def mix():
    inputs = rng.sample(hot, k) + [text() for _ in range(batch - k)]
    rng.shuffle(inputs)
    return inputs
for c in sys.argv[7:]:
    os.makedirs(f"{work}/miss-{c}")
    os.makedirs(f"{work}/mix-{c}")
    for i in range(miss_bodies):
        write(f"{work}/miss-{c}/{i:05}.json", [text() for _ in range(batch)])
    for i in range(mix_bodies):
        write(f"{work}/mix-{c}/{i:05}.json", mix())
write(f"{work}/sample-miss.json", [text() for _ in range(batch)])
write(f"{work}/sample-mix.json", mix())
print(k, file=open(f"{work}/hot-per-mix", "w"))
EOF
HOT_PER_MIX=$(cat "$WORK/hot-per-mix")
log "bodies: $HOT_BODIES hot ($((HOT_BODIES * BATCH)) texts), per concurrency $MISS_BODIES miss and $MIX_BODIES mix ($HOT_PER_MIX hot + $((BATCH - HOT_PER_MIX)) new each)"

# ---------------------------------------------------------------------------- 3. legs
start_citadel() { # start_citadel LEG PREFIX L1_MAX_BYTES: sets CITADEL (host:port) or returns 1
  local leg=$1 prefix=$2 l1=$3
  {
    cat <<EOF
# Generated by bench/run-cache.sh. Per-request INFO lines (tower-http) stay off the hot path;
# only "citadel ready" is needed.
[log]
level = "warn,citadel::serve=info"

[models."all-minilm:int8"]
enabled = false

[cache]
mode = "on"
redis_url = "redis://$REDIS"
key_prefix = "$prefix"
EOF
    [[ $l1 == default ]] || printf 'l1_max_bytes = %s\n' "$l1"
  } >"$WORK/citadel-$leg.toml"
  echo "$prefix" >>"$PREFIX_FILE"
  start_citadel_with "$WORK/citadel-$leg.toml" "$WORK/citadel-$leg.log"
}

cache_status() { curl -fsS "http://$CITADEL/health/detailed" | jq -c .components.cache; }

# CPU seconds so far, for who used the two cores during a load run: "wall busy citadel redis
# children" (busy: every CPU, all processes; children: what this shell has waited for, i.e. the
# loadgen). `times` runs in this shell, not in a subshell, so that it sees the loadgen.
TCK=$(getconf CLK_TCK)
REDIS_PID=
if [[ $REDIS_HOST == 127.0.0.1 || $REDIS_HOST == localhost ]]; then # a remote one is not in /proc
  REDIS_PID=$(rcli info server | tr -d '\r' | sed -n 's/^process_id://p')
fi
jiffies() { awk -v t="$TCK" '{print ($14 + $15) / t}' "/proc/$1/stat" 2>/dev/null || echo 0; }
cpu_now() {
  times >"$WORK/times"
  CPU_NOW="$EPOCHREALTIME $(awk -v t="$TCK" '/^cpu /{print ($2 + $3 + $4 + $7 + $8 + $9) / t}' /proc/stat)"
  CPU_NOW+=" $(jiffies "$CITADEL_PGID") $(jiffies "$REDIS_PID")"
  CPU_NOW+=" $(awk 'NR == 2 {gsub(/[ms]/, " "); print $1 * 60 + $2 + $3 * 60 + $4}' "$WORK/times")"
}

post() { # post BODY NAME: one request; the answer must hold BATCH vectors of DIMS; prints the hits header
  local out=$WORK/answer-$2
  curl -fsS -D "$out.headers" -o "$out.json" -H 'content-type: application/json' \
    --data-binary "@$1" "http://$CITADEL/v1/embeddings" || return 1
  jq -e --argjson n "$BATCH" --argjson d "$DIMS" \
    '(.data | length) == $n and all(.data[]; (.embedding | length) == $d)' "$out.json" >/dev/null || {
    log "wrong answer to $1: see $out.json"
    return 1
  }
  tr -d '\r' <"$out.headers" | sed -n 's/^x-citadel-cache-hits: *//Ip'
}

# warm LEG: one pass of the hot set, then wait until a repeat of its first body is all hits (L2
# writes are asynchronous), and check that the cached vectors are the computed ones.
warm() {
  local f hits="" deadline=$((SECONDS + 10)) first=$WORK/hot/00000.json
  post "$first" "$1-computed" >/dev/null || return 1
  for f in "$WORK"/hot/*.json; do
    [[ $f == "$first" ]] || post "$f" "$1-warm" >/dev/null || return 1
  done
  while ((SECONDS < deadline)); do
    hits=$(post "$first" "$1-cached") || return 1
    [[ $hits == "$BATCH" ]] && break
    sleep 0.2
  done
  [[ $hits == "$BATCH" ]] || {
    log "$1: the hot set is still not cached after warming (x-citadel-cache-hits $hits)"
    return 1
  }
  python3 - "$WORK/answer-$1-computed.json" "$WORK/answer-$1-cached.json" <<'EOF' || return 1
import json, sys
computed, cached = ([d["embedding"] for d in sorted(json.load(open(p))["data"], key=lambda d: d["index"])]
                    for p in sys.argv[1:3])
diff = max(abs(a - b) for u, v in zip(computed, cached) for a, b in zip(u, v))
assert diff <= 1e-7, f"cached vectors differ from the computed ones by {diff}"
EOF
}

run_leg() { # run_leg WORKLOAD L1(on|off): start, warm, load at every concurrency, sample, stop
  local workload=$1 l1=$2 leg="$1-l1$2" c dir before after out sample expect warmup=$WARMUP cpu0
  local prefix=$RUN_PREFIX-$leg
  start_citadel "$leg" "$prefix" "$([[ $l1 == on ]] && echo default || echo 0)" || return 1
  log "$leg: citadel on http://$CITADEL, key prefix $prefix"
  if [[ $workload != miss ]]; then warm "$leg" || return 1; fi
  for c in $CONCURRENCY; do
    case $workload in
      miss) dir=$WORK/miss-$c warmup=$MISS_WARMUP ;;
      repeat) dir=$WORK/hot ;;
      mix) dir=$WORK/mix-$c ;;
    esac
    before=$(cache_status) || return 1
    cpu_now
    cpu0=$CPU_NOW
    out=$("$BIN/citadel-loadgen" --url "http://$CITADEL/v1/embeddings" --body-dir "$dir" \
      --mode closed --concurrency "$c" --threads 1 --duration "$DURATION" --warmup "$warmup" \
      --timeout-ms 60000) || return 1
    cpu_now
    after=$(cache_status) || return 1
    jq -c --arg leg "$leg" --arg workload "$workload" --arg l1 "$l1" --argjson batch "$BATCH" \
      --argjson before "$before" --argjson after "$after" --arg cpu0 "$cpu0" --arg cpu1 "$CPU_NOW" \
      '($cpu0 | split(" ") | map(tonumber)) as $c0 | ($cpu1 | split(" ") | map(tonumber)) as $c1
       | [range(5) | $c1[.] - $c0[.]] as $d | ($d[1] - $d[2] - $d[3] - $d[4]) as $other
       | {leg: $leg, workload: $workload, l1: $l1, batch: $batch, cache_before: $before,
          cache_after: $after, cpu_pct: ([$d[2], $d[4], $d[3], $other] | map(. / $d[0] * 100 | round)
          | {citadel: .[0], loadgen: .[1], redis: .[2], other: .[3]})} + .' <<<"$out" >>"$RAW"
    log "$(tail -n1 "$RAW" | jq -r '"\(.leg) c=\(.concurrency): \(.rps) req/s = \(.rps * .batch | round) emb/s, p50 \(.p50_us / 10 | round / 100) ms, p99 \(.p99_us / 10 | round / 100) ms, errors \(.errors), Citadel hit_rate \(.cache_after.hit_rate * 1e4 | round / 100) %, CPU % citadel/loadgen/redis/other \(.cpu_pct | [.citadel, .loadgen, .redis, .other] | join("/"))"')"
    if (($(tail -n1 "$RAW" | jq '.cpu_pct.other') > 20)); then
      log "WARNING: other processes took more than 20 % of a core during $leg c=$c: its figures are skewed"
    fi
    if [[ $workload != repeat && $(jq '.requests + .warmup_requests > .bodies' <<<"$out") == true ]]; then
      log "$leg c=$c sent more requests than it has bodies: texts were repeated (raise BENCH_${workload^^}_BODIES)"
      return 1
    fi
  done
  case $workload in
    miss) sample=$WORK/sample-miss.json expect=0 ;;
    repeat) sample=$WORK/hot/00000.json expect=$BATCH ;;
    mix) sample=$WORK/sample-mix.json expect=$HOT_PER_MIX ;;
  esac
  local hits final
  hits=$(post "$sample" "$leg-sample") || return 1
  final=$(cache_status) || return 1
  jq -nc --arg leg "$leg" --arg hits "$hits" --argjson expect "$expect" --argjson cache "$final" \
    '{leg: $leg, sample_cache_hits: ($hits | tonumber? // null), sample_expected: $expect, cache_final: $cache}' \
    >>"$WORK/samples.jsonl"
  log "$leg: sample request x-citadel-cache-hits: $hits (expected $expect)"
  stop_group "$CITADEL_PGID"
  forget_group "$CITADEL_PGID"
  drop_keys "$prefix"
  [[ $hits == "$expect" ]] || {
    log "$leg: x-citadel-cache-hits $hits, expected $expect"
    return 1
  }
}

LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average before the run: $LOADAVG_START (other work on these $(nproc) cores skews every figure)"
: >"$WORK/samples.jsonl"
FAILED=()
for workload in miss repeat mix; do
  for l1 in on off; do
    if ! run_leg "$workload" "$l1"; then
      FAILED+=("$workload-l1$l1")
      [[ -n ${CITADEL_PGID:-} ]] && stop_group "$CITADEL_PGID" && forget_group "$CITADEL_PGID"
    fi
    CITADEL_PGID=
  done
done

KEYS_LEFT=$(rcli --scan --pattern "$RUN_PREFIX-*" | wc -l)
log "Redis keys of this run left after the legs: $KEYS_LEFT"

# ---------------------------------------------------------------------------- 4. redis-benchmark
# `-t get` alone reads a key nobody set (a nil reply, -d ignored): SET first, then GET the
# 1536-byte value. redis-benchmark's key is "key:__rand_int__" (no -r); deleted afterwards.
KEY_EXISTED=$(rcli exists 'key:__rand_int__')
for p in 1 64; do
  log "redis-benchmark -t set,get -d 1536 -n $REDIS_REQUESTS -P $p"
  redis-benchmark -h "$REDIS_HOST" -p "$REDIS_PORT" -t set,get -n "$REDIS_REQUESTS" -q -d 1536 -P "$p" |
    tr '\r' '\n' | grep 'requests per second' >"$WORK/redis-benchmark-P$p.txt" || {
    FAILED+=("redis-benchmark-P$p")
    continue
  }
  cat "$WORK/redis-benchmark-P$p.txt" >&2
done
if [[ $KEY_EXISTED == 0 ]]; then rcli del 'key:__rand_int__' >/dev/null; fi

# ---------------------------------------------------------------------------- 5. report
OUT=$RESULTS_DIR/cache-$(date -u +%Y-%m-%d).json
PARAMS=$(jq -cn --arg load "$LOADAVG_START" --arg failed "${FAILED[*]:-}" --arg conc "$CONCURRENCY" \
  --argjson duration "$DURATION" --argjson warmup "$WARMUP" --argjson miss_warmup "$MISS_WARMUP" \
  --argjson batch "$BATCH" --argjson left "$KEYS_LEFT" \
  --argjson share "$HOT_SHARE" --argjson hot "$HOT_BODIES" --argjson hot_per_mix "$HOT_PER_MIX" \
  --arg redis "$REDIS" --argjson rn "$REDIS_REQUESTS" \
  '{loadavg_at_start: ($load | split(" ")), failed_legs: ($failed | split(" ") | map(select(. != ""))),
    load: {mode: "closed", concurrency: ($conc | split(" ") | map(select(. != "") | tonumber)),
           duration_s: $duration, warmup_s: $warmup, miss_warmup_s: $miss_warmup, loadgen_threads: 1, batch: $batch,
           hot_bodies: $hot, hot_texts: ($hot * $batch), hot_share: $share, hot_per_mix_request: $hot_per_mix},
    redis: $redis, redis_requests: $rn, redis_keys_left: $left}')
python3 - "$WORK" "$OUT" "$PARAMS" <<'EOF'
import json, os, platform, re, subprocess, sys
from datetime import datetime, timezone

work, out, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
runs = [json.loads(l) for l in open(f"{work}/runs.jsonl") if l.strip()]
samples = {s["leg"]: s for s in map(json.loads, open(f"{work}/samples.jsonl")) if s}
git = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True).stdout.strip()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")

def delta(r):
    b, a = r["cache_before"], r["cache_after"]
    d = {f"{lvl}_{k}": a[lvl][k] - b[lvl][k] for lvl in ("l1", "l2") for k in ("hits", "misses")}
    looked = d["l1_hits"] + d["l1_misses"]
    d["hit_rate"] = round((d["l1_hits"] + d["l2_hits"]) / looked, 4) if looked else None
    return d

legs, errors = {}, 0
for r in runs:
    r["emb_per_s"] = round(r["rps"] * r["batch"])
    r["load_cache"] = delta(r)
    errors += r["errors"]
    legs.setdefault(r["leg"], []).append(r)

redis = {}
for p in (1, 64):
    try:
        for line in open(f"{work}/redis-benchmark-P{p}.txt"):
            m = re.match(r"\s*(\w+): ([\d.]+) requests per second(?:, p50=([\d.]+) msec)?", line)
            if m:
                redis[f"{m[1].lower()}_P{p}"] = {"ops_per_s": float(m[2]), "p50_ms": m[3] and float(m[3])}
    except FileNotFoundError:
        pass

ms = lambda us: f"{us / 1000:.2f}"
md = ["| leg | L1 | conc. | req/s | embeddings/s | p50 ms | p99 ms | hit rate over the load "
      "| L1 hits / misses | L2 hits / misses | CPU % citadel / loadgen / redis / other | errors |",
      "|---|---|---:|---:|---:|---:|---:|---:|---|---|---|---:|"]
summary, cpu_cols = {}, ("citadel", "loadgen", "redis", "other")
for leg, rs in legs.items():
    for r in rs:
        d = r["load_cache"]
        hr = f"{d['hit_rate'] * 100:.1f} %" if d["hit_rate"] is not None else "-"
        md.append(f"| {r['workload']} | {r['l1']} | {r['concurrency']} | {r['rps']:,.1f} | {r['emb_per_s']:,} "
                  f"| {ms(r['p50_us'])} | {ms(r['p99_us'])} | {hr} | {d['l1_hits']:,} / {d['l1_misses']:,} "
                  f"| {d['l2_hits']:,} / {d['l2_misses']:,} | {' / '.join(str(r['cpu_pct'][k]) for k in cpu_cols)} "
                  f"| {r['errors']} |")
    # The lowest concurrency within 3 % of the highest throughput: more in flight past that only
    # adds latency.
    top = max(r["rps"] for r in rs)
    best = min((r for r in rs if r["rps"] >= 0.97 * top), key=lambda r: r["concurrency"])
    s = samples.get(leg, {})
    final = s.get("cache_final") or rs[-1]["cache_after"]
    summary[leg] = {
        "workload": best["workload"], "l1": best["l1"], "best_concurrency": best["concurrency"],
        "rps": best["rps"], "emb_per_s": best["emb_per_s"],
        "p50_ms": best["p50_us"] / 1000, "p99_ms": best["p99_us"] / 1000, "cpu_pct": best["cpu_pct"],
        "hit_rate_over_load": best["load_cache"]["hit_rate"],
        "citadel_hit_rate": rs[-1]["cache_after"]["hit_rate"],
        "citadel_cache_after": rs[-1]["cache_after"],
        "sample_x_citadel_cache_hits": s.get("sample_cache_hits"), "sample_expected": s.get("sample_expected"),
    }

md += ["", "CPU: % of one core over the loadgen's run (its warm-up included); the machine has "
       f"{os.cpu_count() * 100} %, and \"other\" is every process but these three.",
       "", "Best concurrency per leg (the lowest within 3 % of the leg's highest throughput); Citadel's hit rate is components.cache.hit_rate of /health/detailed "
       "after the leg's load (its warm-up pass included):", "",
       "| leg | L1 | best conc. | embeddings/s | p50 / p99 ms | Citadel hit_rate | x-citadel-cache-hits (sample) |",
       "|---|---|---:|---:|---:|---:|---:|"]
for leg, s in summary.items():
    md.append(f"| {s['workload']} | {s['l1']} | {s['best_concurrency']} | **{s['emb_per_s']:,}** | "
              f"{s['p50_ms']:.2f} / {s['p99_ms']:.2f} | {s['citadel_hit_rate'] * 100:.2f} % | "
              f"{s['sample_x_citadel_cache_hits']} of {params['load']['batch']} (expected {s['sample_expected']}) |")

comparison = {}
if redis:
    md += ["", "redis-benchmark, 1536-byte values (-d 1536, -n %d, 50 clients), next to Citadel's cache hits "
           "(workload repeat, best concurrency; one embedding = one GET):" % params["redis_requests"], "",
           "| redis-benchmark | ops/s | p50 ms | repeat, L1 on / it | repeat, L1 off / it |", "|---|---:|---:|---:|---:|"]
    on, off = summary.get("repeat-l1on"), summary.get("repeat-l1off")
    for name, r in redis.items():
        ratio = lambda s: round(s["emb_per_s"] / r["ops_per_s"], 4) if s else None
        comparison[name] = {"ops_per_s": r["ops_per_s"], "p50_ms": r["p50_ms"],
                            "repeat_l1on_over": ratio(on), "repeat_l1off_over": ratio(off)}
        fmt = lambda x: f"{x:.3f}x" if x is not None else "-"
        if name.startswith("get"):  # SET (run first, to store the value) is in the JSON only
                md.append(f"| GET, -P {name.split('_P')[1]} | {r['ops_per_s']:,.0f} | {r['p50_ms']} | "
                      f"{fmt(ratio(on))} | {fmt(ratio(off))} |")

rep_on, rep_off = summary.get("repeat-l1on"), summary.get("repeat-l1off")
targets = {
    "repeat_l1on_emb_per_s": rep_on and rep_on["emb_per_s"],
    "repeat_at_least_20000_emb_per_s": (rep_on["emb_per_s"] >= 20000) if rep_on else None,
    "repeat_hit_rate": {k: s["citadel_hit_rate"] for k, s in summary.items() if s["workload"] == "repeat"},
    "repeat_hit_rate_above_95pct": all(s["citadel_hit_rate"] > 0.95 for s in summary.values()
                                       if s["workload"] == "repeat") if rep_on or rep_off else None,
}
result = {
    "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    "commit": git("rev-parse", "--short", "HEAD") + ("-dirty" if git("status", "--porcelain") else ""),
    "machine": {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
                "loadavg_at_start": params["loadavg_at_start"],
                "loadavg_at_end": open("/proc/loadavg").read().split()[:3]},
    "load": params["load"], "redis": params["redis"], "redis_keys_left": params["redis_keys_left"],
    "failed_legs": params["failed_legs"],
    "errors": errors, "targets": targets, "legs": summary, "redis_benchmark": comparison, "runs": runs,
}
with open(out, "w") as f:
    json.dump(result, f, indent=1)
print("\n".join(md))
print(f"\nmachine: {os.cpu_count()} x {cpu}, load average {' '.join(params['loadavg_at_start'])} at start; "
      f"targets: {json.dumps(targets)}")
print(errors, file=open(f"{work}/errors", "w"))
EOF
ERRORS=$(cat "$WORK/errors")
log "results: $OUT (per-run files: $WORK)"
if ((${#FAILED[@]})); then
  log "FAILED: ${FAILED[*]}"
  exit 1
fi
if ((ERRORS > 0)); then
  log "FAILED: $ERRORS requests failed (see $WORK/runs.jsonl)"
  exit 1
fi
log "done"
