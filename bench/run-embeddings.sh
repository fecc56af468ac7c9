#!/usr/bin/env bash
# The embeddings benchmark in one command (`make bench` calls it):
#   1. scripts/setup-models.sh         prepares models/all-minilm (+ ONNX graph, onnxruntime)
#   2. .venv/bench                     pinned sentence-transformers / torch / numpy (reused)
#   3. cargo build --release --bin citadel
#   4. target/release/citadel serve on 127.0.0.1:0 (HTTP) and 127.0.0.1:0 (gRPC), stdout to
#      target/bench/citadel-serve.log; waits for its "citadel ready" log line
#   5. bench/embeddings.py against it -> target/bench/embeddings.json, Markdown on stdout
#   6. SIGTERM to the server, and wait for it (an EXIT trap makes sure it never outlives us)
# Extra arguments go to bench/embeddings.py, e.g. `bench/run-embeddings.sh --quick`.
# Environment: BENCH_VENV (default .venv/bench), BENCH_PYTHON (python used to create the
# venv, default python3), BENCH_READY_TIMEOUT (seconds, default 120), CARGO (default cargo).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${BENCH_VENV:-.venv/bench}
MODEL_DIR=models/all-minilm
ORT_LIB=models/onnxruntime/libonnxruntime.so.1.31.1
OUT_DIR=target/bench
OUT=$OUT_DIR/embeddings.json
LOG=$OUT_DIR/citadel-serve.log
ERR_LOG=$OUT_DIR/citadel-serve.stderr.log
READY_TIMEOUT=${BENCH_READY_TIMEOUT:-120}
STOP_TIMEOUT=30
CARGO=${CARGO:-cargo}
# What pip resolved for sentence-transformers on CPython 3.11, x86_64 Linux (2026-11-21).
# Change them together; the venv is re-synced when this list changes.
PINS=(
  sentence-transformers==6.2.0
  torch==2.15.0
  numpy==2.4.6
  transformers==5.23.0
  tokenizers==0.23.3
)

log() { printf '[bench] %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

# ---------------------------------------------------------------------------- server cleanup
SERVER_PID=
BENCH_PID=
STOP_RC=
stop_server() { # stop_server SECONDS: SIGTERM, wait up to SECONDS, then SIGKILL; sets STOP_RC
  local pid=$SERVER_PID rc=0
  [[ -n $pid ]] || return 0
  SERVER_PID=
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + $1))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "WARNING: citadel (pid $pid) still running ${1}s after SIGTERM; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || rc=$?
  STOP_RC=$rc
}
on_exit() {
  local rc=$?
  if [[ -n $BENCH_PID ]] && kill -0 "$BENCH_PID" 2>/dev/null; then
    log "stopping bench/embeddings.py (pid $BENCH_PID)"
    kill -TERM "$BENCH_PID" 2>/dev/null || true
    wait "$BENCH_PID" 2>/dev/null || true
  fi
  if [[ -n $SERVER_PID ]]; then
    log "stopping citadel (pid $SERVER_PID)"
    stop_server 10
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

show_logs() {
  log "last lines of $LOG:"
  tail -n 30 "$LOG" >&2 || true
  if [[ -s $ERR_LOG ]]; then
    log "last lines of $ERR_LOG:"
    tail -n 30 "$ERR_LOG" >&2 || true
  fi
}

# ---------------------------------------------------------------------------- 1. models
[[ -f scripts/setup-models.sh ]] || die "scripts/setup-models.sh not found"
log "preparing models (scripts/setup-models.sh)"
bash scripts/setup-models.sh
[[ -f $MODEL_DIR/modules.json || -f $MODEL_DIR/config.json ]] ||
  die "$MODEL_DIR is not a sentence-transformers model directory after scripts/setup-models.sh"

# ---------------------------------------------------------------------------- 2. venv
venv_python_ok() { [[ -x $VENV/bin/python ]] && "$VENV/bin/python" -c 'import sys' 2>/dev/null; }

ensure_venv() {
  local want
  want=$(printf '%s\n' "${PINS[@]}")
  if venv_python_ok && [[ -f $VENV/.bench-pins && "$(cat "$VENV/.bench-pins")" == "$want" ]]; then
    log "reusing $VENV"
    return
  fi
  if ! venv_python_ok; then
    local py=${BENCH_PYTHON:-python3}
    command -v "$py" >/dev/null || die "$py not found"
    if ! "$py" -c 'import venv, ensurepip' 2>/dev/null; then
      log "$py cannot create venvs: installing python3-venv with apt-get"
      local sudo=
      ((EUID == 0)) || sudo=sudo
      $sudo apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv
      # A python3 that is not Debian's own (pyenv, ...) is not helped by that package.
      "$py" -c 'import venv, ensurepip' 2>/dev/null || py=/usr/bin/python3
    fi
    log "creating $VENV with $("$py" --version 2>&1)"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    "$py" -m venv "$VENV"
  fi
  rm -f "$VENV/.bench-pins"
  log "installing ${PINS[*]} into $VENV (the first time this downloads torch: minutes)"
  "$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off "${PINS[@]}"
  printf '%s\n' "$want" >"$VENV/.bench-pins"
}
ensure_venv

# ---------------------------------------------------------------------------- 3. build
log "building citadel ($CARGO build --release --bin citadel)"
"$CARGO" build --release --bin citadel
[[ -x target/release/citadel ]] || die "target/release/citadel was not built"

# ---------------------------------------------------------------------------- 4. server
mkdir -p "$OUT_DIR"
: >"$LOG"
: >"$ERR_LOG"
if [[ -z ${ORT_DYLIB_PATH:-} && -f $ORT_LIB ]]; then
  export ORT_DYLIB_PATH=$PWD/$ORT_LIB
fi
log "starting citadel serve (stdout: $LOG, stderr: $ERR_LOG)"
target/release/citadel serve --http-addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 >"$LOG" 2>"$ERR_LOG" &
SERVER_PID=$!

HTTP_ADDR=
deadline=$((SECONDS + READY_TIMEOUT))
while :; do
  # {"timestamp":..,"level":"INFO","fields":{"message":"citadel ready","http_addr":"127.0.0.1:41234",..},..}
  line=$(grep -m1 -E '"message": ?"citadel ready"' "$LOG" || true)
  if [[ -n $line ]]; then
    HTTP_ADDR=$(grep -oE '"http_addr": ?"[^"]+"' <<<"$line" | head -n1 | sed -E 's/.*"([^"]+)"$/\1/' || true)
    [[ -n $HTTP_ADDR ]] && break
  fi
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    rc=0
    wait "$SERVER_PID" || rc=$?
    SERVER_PID=
    show_logs
    die "citadel exited (status $rc) before it logged \"citadel ready\""
  fi
  if ((SECONDS >= deadline)); then
    show_logs
    die "no \"citadel ready\" line with an http_addr in $LOG after ${READY_TIMEOUT}s (is RUST_LOG hiding INFO?)"
  fi
  sleep 0.2
done
log "citadel ready on http://$HTTP_ADDR (pid $SERVER_PID)"

# ---------------------------------------------------------------------------- 5. bench
# In the background + wait, so that a SIGINT/SIGTERM to this script is handled at once.
bench_rc=0
"$VENV/bin/python" bench/embeddings.py --url "http://$HTTP_ADDR" --model-dir "$MODEL_DIR" --out "$OUT" "$@" &
BENCH_PID=$!
wait "$BENCH_PID" || bench_rc=$?
BENCH_PID=

# ---------------------------------------------------------------------------- 6. stop
log "stopping citadel (SIGTERM)"
stop_server "$STOP_TIMEOUT"
if [[ $STOP_RC != 0 ]]; then
  log "WARNING: citadel exited with status $STOP_RC after SIGTERM (expected 0); see $LOG"
else
  log "citadel stopped cleanly"
fi
if ((bench_rc != 0)); then
  log "benchmark FAILED (exit status $bench_rc); server log: $LOG"
else
  log "benchmark done"
fi
exit "$bench_rc"
