# shellcheck shell=bash
# Shared by the benchmark scripts (sourced, not run): logging, the servers' process groups,
# and starting `citadel serve` until it says it is ready. The sourcing script sets LOG_TAG,
# PGID_FILE, READY_TIMEOUT and BIN before calling these.

log() { printf '[%s] %s\n' "$LOG_TAG" "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}
require() { # require TOOL...: die naming the first one missing
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || die "$tool not found"
  done
}

# Every server runs in its own process group (setsid), so stopping it stops its workers too.
# The groups are also listed in PGID_FILE, so that a run killed before its trap could run
# (SIGKILL) has its servers stopped by the next one.
PGIDS=()
stop_group() { # stop_group PGID: SIGTERM to the group, SIGKILL after 10 s
  local pgid=$1 deadline=$((SECONDS + 10))
  kill -TERM -- "-$pgid" 2>/dev/null || return 0
  while kill -0 -- "-$pgid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
  kill -KILL -- "-$pgid" 2>/dev/null || true
  wait "$pgid" 2>/dev/null || true
}
forget_group() {
  local keep=() p
  for p in "${PGIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  PGIDS=("${keep[@]}")
}
stop_all_groups() {
  local p
  for p in "${PGIDS[@]}"; do stop_group "$p"; done
}
start() { # start LOG CMD...: run CMD in a new process group; sets STARTED
  local out=$1
  shift
  setsid "$@" >"$out" 2>&1 </dev/null &
  STARTED=$!
  PGIDS+=("$STARTED")
  echo "$STARTED" >>"$PGID_FILE"
}
reap_stale_groups() { # reap_stale_groups PATTERN: stop groups an earlier run left behind
  local pgid
  mkdir -p "$(dirname "$PGID_FILE")"
  if [[ -f $PGID_FILE ]]; then
    while read -r pgid; do
      # Only a group whose leader is still one of ours (pids are reused).
      if grep -qaE "$1" "/proc/$pgid/cmdline" 2>/dev/null; then
        log "stopping process group $pgid left by an earlier run"
        stop_group "$pgid"
      fi
    done <"$PGID_FILE"
  fi
  : >"$PGID_FILE"
}

listening_addr() { # listening_addr LOG PREFIX WHAT: the address LOG names after PREFIX (within 10 s), or die naming WHAT
  local log=$1 prefix=$2 what=$3 addr=
  for _ in $(seq 1 100); do
    addr=$(sed -n "s/^$prefix //p" "$log")
    if [[ -n $addr ]]; then
      printf '%s\n' "$addr"
      return 0
    fi
    sleep 0.1
  done
  die "$what did not start: $(cat "$log")"
}

free_port() { # free_port: a TCP port free on loopback now
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start_citadel_with() { # start_citadel_with CONFIG LOG [GRPC_ADDR]: sets CITADEL (host:port) or returns 1
  local config=$1 out=$2 grpc=${3:-127.0.0.1:0}
  # RUST_LOG would override the config's log level and put a line per request on the hot path.
  start "$out" env -u RUST_LOG "$BIN/citadel" serve --config "$config" \
    --http-addr 127.0.0.1:0 --grpc-addr "$grpc"
  CITADEL_PGID=$STARTED
  local deadline=$((SECONDS + READY_TIMEOUT)) line
  while ((SECONDS < deadline)); do
    line=$(grep -m1 -E '"message": ?"citadel ready"' "$out" 2>/dev/null || true)
    CITADEL=$(grep -oE '"http_addr": ?"[^"]+"' <<<"$line" | sed -E 's/.*"([^"]+)"$/\1/' || true)
    [[ -n $CITADEL ]] && return 0
    kill -0 "$CITADEL_PGID" 2>/dev/null || break
    sleep 0.2
  done
  log "citadel did not become ready; last lines of $out:"
  tail -n 15 "$out" >&2 || true
  stop_group "$CITADEL_PGID"
  forget_group "$CITADEL_PGID"
  return 1
}

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

# make_jwt DIR: prints an RS256 token like a Clerk session token (sub, iss, iat, nbf, exp;
# issuer https://clerk.bench.test), signed with a key made for this run and written to DIR
# (jwt.pem, and jwt.pub, the PEM alone the server verifies it with).
make_jwt() {
  local dir=$1
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/jwt.pem" 2>/dev/null
  openssl pkey -in "$dir/jwt.pem" -pubout -out "$dir/jwt.pub"
  local now header payload sig
  now=$(date +%s)
  header=$(printf '{"alg":"RS256","typ":"JWT","kid":"bench"}' | b64url)
  # Valid for the whole run (a real Clerk token lives 60 s and is refreshed by the client).
  payload=$(printf '{"sub":"user_bench","iss":"https://clerk.bench.test","sid":"sess_bench","iat":%d,"nbf":%d,"exp":%d}' \
    $((now - 5)) $((now - 5)) $((now + 7200)) | b64url)
  sig=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -sign "$dir/jwt.pem" -binary | b64url)
  printf '%s.%s.%s' "$header" "$payload" "$sig"
}
