#!/usr/bin/env bash
# Makes sure the services the tests talk to answer on loopback: Redis on 127.0.0.1:6379 (the
# cache's L2) and PostgreSQL on 127.0.0.1:5432 (trust auth, database `test`). On a fresh Debian
# machine or CI runner it installs what is missing (apt-get) and starts it; where both already
# answer it only checks, in well under a second. Safe to run again. `citadel serve` on its
# embedded defaults needs neither, so scripts/run.sh does not call this.
set -euo pipefail

REDIS_PORT=6379
PG_PORT=5432
WAIT_S=30

say() { echo "ensure-services: $*"; }
die() {
  echo "ensure-services: error: $*" >&2
  exit 1
}

# Root when needed: CI containers run as root, a developer's machine has sudo.
as_root() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root for: $* (run as root, or install sudo)"
  fi
}

# Installs Debian packages, refreshing the package lists only when they do not know a package
# (a fresh image ships with none; a warm one should not pay for `apt-get update`).
apt_install() {
  command -v apt-get >/dev/null 2>&1 ||
    die "$* missing and apt-get not found: install $* yourself, then run this again"
  local pkg
  for pkg in "$@"; do
    if ! apt-cache show "$pkg" >/dev/null 2>&1; then
      as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
      break
    fi
  done
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

# Polls `check` (a function name) every half second until it passes; gives up after WAIT_S
# seconds of wall time (a check may itself take a while against a stuck listener).
wait_for() {
  local check=$1 deadline=$((SECONDS + WAIT_S))
  while ! "$check"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.5
  done
}

# === Redis ===

# `timeout`: redis-cli waits forever for a reply from a listener that is not Redis.
redis_up() { [ "$(timeout 2 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }

ensure_redis() {
  if redis_up; then
    say "redis 127.0.0.1:$REDIS_PORT ok"
    return
  fi
  if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    apt_install redis-server
  fi
  # The package may have started its own service on the same port.
  if ! redis_up; then
    as_root mkdir -p /var/lib/redis /var/log/redis
    # Nothing on disk: test data must not outlive the run.
    as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" \
      --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
  fi
  wait_for redis_up ||
    die "redis did not answer on 127.0.0.1:$REDIS_PORT within ${WAIT_S}s: see /var/log/redis/ci.log (is the port taken by something else?)"
  say "redis 127.0.0.1:$REDIS_PORT ok"
}

# === PostgreSQL ===

pg_up() { pg_isready -q -h 127.0.0.1 -p "$PG_PORT" 2>/dev/null; }
# -w: never prompt for a password; a prompt means trust auth is not in place.
pg_sql() { psql -w -X -q -v ON_ERROR_STOP=1 -U postgres -h 127.0.0.1 -p "$PG_PORT" -tA "$@"; }
pg_version() { ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1; }

# Puts trust rules for local and loopback connections first in pg_hba.conf (the first matching
# line wins). Test machines only: anyone on the host can then connect as any role.
pg_trust() {
  local hba tmp
  hba="/etc/postgresql/$(pg_version)/main/pg_hba.conf"
  [ -f "$hba" ] || die "$hba not found: cannot set trust auth for PostgreSQL on 127.0.0.1:$PG_PORT"
  if ! as_root grep -q '^# ensure-services: trust' "$hba"; then
    tmp=$(mktemp)
    {
      echo '# ensure-services: trust local and loopback connections (test machines only)'
      echo 'local all all trust'
      echo 'host all all 127.0.0.1/32 trust'
      echo 'host all all ::1/128 trust'
      as_root cat "$hba"
    } >"$tmp"
    # cp over the existing file keeps its owner (postgres) and mode.
    as_root cp "$tmp" "$hba"
    rm -f "$tmp"
  fi
}

pg_start() {
  as_root pg_ctlcluster --skip-systemctl-redirect "$(pg_version)" main start ||
    say "pg_ctlcluster start failed (see above); waiting in case it is starting anyway"
}

ensure_postgres() {
  if ! pg_up; then
    if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(pg_version)" ]; then
      apt_install postgresql
    fi
    if ! pg_up; then
      pg_trust
      pg_start
    fi
    wait_for pg_up ||
      die "postgresql did not answer on 127.0.0.1:$PG_PORT within ${WAIT_S}s: see /var/log/postgresql/postgresql-$(pg_version)-main.log"
  fi
  # Running but asking for a password (e.g. the package's own defaults): switch to trust.
  if ! pg_sql -c 'SELECT 1' >/dev/null 2>&1; then
    pg_trust
    as_root pg_ctlcluster --skip-systemctl-redirect "$(pg_version)" main reload
    wait_for pg_up || true
    pg_sql -c 'SELECT 1' >/dev/null ||
      die "cannot connect as postgres to 127.0.0.1:$PG_PORT without a password: make pg_hba.conf trust local connections"
  fi
  if [ "$(pg_sql -c "SELECT 1 FROM pg_database WHERE datname = 'test'")" != 1 ]; then
    pg_sql -c 'CREATE DATABASE test'
  fi
  say "postgresql 127.0.0.1:$PG_PORT ok (database test)"
}

ensure_redis
ensure_postgres
