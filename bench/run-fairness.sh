#!/usr/bin/env bash
# Fairness of the in-process model in one command (`make bench-fairness` calls it): how long a
# caller's single-input request takes while another caller's bulk request of long texts runs.
#   1. scripts/setup-models.sh (fast when done), cargo build --release --locked --bin citadel
#   2. citadel serve (release, embedded defaults, cache off, all-minilm only) on free loopback
#      ports, log in target/bench/fairness/
#   3. alone:  BENCH_SMALL sequential single-input requests (after 10 warm-up ones)
#   4. beside: one client sends a bulk request of BENCH_BULK texts of ~300 words (each cut at
#      256 tokens), while another sends single-input requests one after the other until the
#      bulk answers
#   5. p50 / p99 / max of the single-input latency in both phases, and the bulk's time, as
#      Markdown on stdout and JSON in target/bench/fairness/result.json
# BIN_CITADEL=path/to/citadel measures another build (e.g. the previous commit's) instead of
# building this tree. Exits non-zero when a request fails.
# Environment: BENCH_BULK (400), BENCH_SMALL (100), BENCH_READY_TIMEOUT (s, 120), CARGO.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

WORK=target/bench/fairness
BULK=${BENCH_BULK:-400}
SMALL=${BENCH_SMALL:-100}
READY_TIMEOUT=${BENCH_READY_TIMEOUT:-120}
CARGO=${CARGO:-cargo}
ORT_LIB=models/onnxruntime/libonnxruntime.so.1.31.1

LOG_TAG=bench-fairness
PGID_FILE=target/bench/fairness.pgids
# shellcheck source=bench/lib.sh
source bench/lib.sh
require python3 setsid
trap 'rc=$?; stop_all_groups; exit $rc' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
reap_stale_groups 'citadel'

# ---------------------------------------------------------------------------- 1. build
bash scripts/setup-models.sh >&2
if [[ -n ${BIN_CITADEL:-} ]]; then
  BIN=$(cd "$(dirname "$BIN_CITADEL")" && pwd)
else
  log "building citadel ($CARGO build --release --locked --bin citadel)"
  "$CARGO" build --release --locked --bin citadel
  BIN=$PWD/target/release
fi
[[ -x $BIN/citadel ]] || die "$BIN/citadel was not built"
if [[ -z ${ORT_DYLIB_PATH:-} && -f $ORT_LIB ]]; then
  export ORT_DYLIB_PATH=$PWD/$ORT_LIB
fi

# ---------------------------------------------------------------------------- 2. server
mkdir -p "$WORK"
cat >"$WORK/citadel.toml" <<'EOF'
[log]
level = "warn,citadel::serve=info"

[models."all-minilm:int8"]
enabled = false

[cache]
mode = "off"
EOF
start_citadel_with "$WORK/citadel.toml" "$WORK/citadel.log" || die "citadel did not start"
log "citadel ready on http://$CITADEL ($BIN/citadel)"

# ---------------------------------------------------------------------------- 3-5. measure
python3 - "$CITADEL" "$BULK" "$SMALL" "$WORK/result.json" <<'EOF'
import http.client, json, sys, threading, time

addr, bulk_n, small_n, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
host, port = addr.rsplit(":", 1)
WORDS = "river engine quiet forest signal market yellow protocol garden vector winter orbit".split()

def post(conn, inputs):
    body = json.dumps({"model": "all-minilm", "input": inputs})
    started = time.perf_counter()
    conn.request("POST", "/v1/embeddings", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise SystemExit(f"HTTP {response.status}: {data[:300]!r}")
    return time.perf_counter() - started

def stats(values):
    s = sorted(values)
    pick = lambda p: s[min(len(s) - 1, int(p * len(s)))] * 1000
    return {"n": len(s), "p50_ms": pick(0.50), "p99_ms": pick(0.99), "max_ms": s[-1] * 1000}

small = http.client.HTTPConnection(host, int(port), timeout=600)
for i in range(10):
    post(small, f"warm-up {i}")
alone = [post(small, f"alone {i} quick brown fox") for i in range(small_n)]

bulk_inputs = [
    f"doc {d} " + " ".join(WORDS[(d * 7 + i * 13 + i * i) % len(WORDS)] for i in range(300))
    for d in range(bulk_n)
]
done = threading.Event()
bulk_time = []

def bulk():
    conn = http.client.HTTPConnection(host, int(port), timeout=600)
    bulk_time.append(post(conn, bulk_inputs))
    done.set()

thread = threading.Thread(target=bulk)
thread.start()
time.sleep(0.5)  # the bulk request is tokenized and queued first
beside, i = [], 0
while not done.is_set():
    beside.append(post(small, f"beside {i} quick brown fox"))
    i += 1
thread.join()
if not beside:
    raise SystemExit("no single-input request ran beside the bulk one")
result = {"bulk_inputs": bulk_n, "bulk_s": bulk_time[0], "alone": stats(alone), "beside": stats(beside)}
json.dump(result, open(out, "w"), indent=2)
print(f"bulk request: {bulk_n} texts of ~300 words (256 tokens each), {bulk_time[0]:.1f} s")
print()
print("| single-input request | n | p50 | p99 | max |")
print("|---|---:|---:|---:|---:|")
for name in ("alone", "beside"):
    s = result[name]
    print(f"| {name} | {s['n']} | {s['p50_ms']:.1f} ms | {s['p99_ms']:.1f} ms | {s['max_ms']:.1f} ms |")
EOF
