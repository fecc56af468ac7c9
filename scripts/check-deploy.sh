#!/usr/bin/env bash
# Checks the operator files in deploy/ offline, as CI does (scripts/test.sh runs it):
#   - systemd units: `systemd-analyze verify` in a scratch root, and their dependencies exist;
#   - Prometheus rules: `promtool check rules` and `promtool test rules`, and every alert has a
#     runbook section in deploy/README.md and a firing and a quiet test case;
#   - Kubernetes manifests: strict schema validation (unknown fields fail) against Kubernetes
#     1.30 and the newest schemas kubernetes-validate bundles, the kustomization's file list,
#     and what the manifests rely on across files (ports, probe paths, selectors, ...);
#   - the Grafana dashboard: structure, and every panel query parsed by promtool.
# Installs what it needs (a venv in .venv/deploy, promtool from Debian's package) once; safe to
# run again. Connects to nothing but the package registries, and only the first time.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv/deploy
# kubernetes-validate bundles the Kubernetes JSON schemas, so validation needs no network.
# Everything it pulls in is pinned, so every machine validates with the same code.
PINS=(kubernetes-validate==1.37.0 PyYAML==6.0.4 jsonschema==4.26.0
  jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1 attrs==26.1.0
  importlib_resources==7.1.0 packaging==26.4 typing_extensions==4.16.0)
PROMTOOL="$VENV/bin/promtool"
UNITS=(deploy/systemd/citadel.service deploy/systemd/citadel-worker.service)
# Where deploy/README.md and the units install the binary: the stub in the scratch root.
INSTALLED_BINARY=/usr/local/bin/citadel

die() { echo "check-deploy: $*" >&2; exit 1; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# apt's _apt user fetches into a folder below it.
chmod 0711 "$scratch"

# promtool alone, taken out of Debian's `prometheus` package: installing the package would
# also install (and on a systemd host start) a Prometheus server listening on :9090, pull in
# a web UI's worth of JavaScript packages and create a user, none of which a check needs.
# `apt-get download` needs no root; dpkg-deb unpacks one file. It runs in the background,
# beside the venv's pip install, to keep a first run short.
fetch_promtool() {
  local dir="$scratch/apt"
  mkdir -p "$dir"
  # apt drops root to _apt for downloads: let it write there (it warns otherwise).
  if [[ $(id -u) -eq 0 ]] && id _apt >/dev/null 2>&1; then chown _apt "$dir"; fi
  if ! (cd "$dir" && apt-get download -qq prometheus); then
    echo "==> apt-get update (no package list has prometheus yet)"
    as_root apt-get update -qq
    (cd "$dir" && apt-get download -qq prometheus)
  fi
  dpkg-deb --fsys-tarfile "$dir"/prometheus_*.deb | tar -xO ./usr/bin/promtool >"$PROMTOOL.part"
  chmod 0755 "$PROMTOOL.part"
  mv "$PROMTOOL.part" "$PROMTOOL"
}

need_venv=false
if [[ ! -f "$VENV/.pins" ]] || [[ "$(cat "$VENV/.pins")" != "${PINS[*]}" ]]; then
  need_venv=true
fi
mkdir -p "$VENV/bin"
promtool_pid=
if [[ ! -x "$PROMTOOL" ]]; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "==> fetching promtool from Debian's prometheus package into $PROMTOOL"
    fetch_promtool >"$scratch/promtool.log" 2>&1 &
    promtool_pid=$!
  elif command -v promtool >/dev/null 2>&1; then
    PROMTOOL=$(command -v promtool)
  else
    die "no promtool: install Prometheus' promtool (>= 2.5, for 'test rules') or run on Debian"
  fi
fi
if $need_venv; then
  echo "==> creating $VENV (${PINS[*]})"
  # Without a pip of its own when the host's pip can install into it (pip >= 22.3's
  # --python): bootstrapping pip into a venv is a third of a first run's time.
  python3 -m venv --without-pip "$VENV"
  if python3 -m pip --python "$VENV/bin/python" --version >/dev/null 2>&1; then
    pip=(python3 -m pip --python "$VENV/bin/python")
  else
    "$VENV/bin/python" -m ensurepip --default-pip >/dev/null
    pip=("$VENV/bin/python" -m pip)
  fi
  "${pip[@]}" install --quiet --disable-pip-version-check --only-binary=:all: "${PINS[@]}"
  echo "${PINS[*]}" >"$VENV/.pins"
fi
if [[ -n $promtool_pid ]]; then
  if ! wait "$promtool_pid"; then
    cat "$scratch/promtool.log" >&2
    die "could not fetch promtool from Debian's prometheus package (log above)"
  fi
  grep '^==>' "$scratch/promtool.log" || true
fi
PY="$VENV/bin/python"
"$PROMTOOL" test rules --help >/dev/null 2>&1 \
  || die "$PROMTOOL has no 'test rules' command (needs Prometheus >= 2.5): $("$PROMTOOL" --version 2>&1 | head -1)"

echo "==> systemd-analyze verify ${UNITS[*]}"
if ! command -v systemd-analyze >/dev/null 2>&1; then
  as_root apt-get install -y -qq --no-install-recommends systemd >/dev/null \
    || die "systemd-analyze is missing and systemd could not be installed"
fi
# A scratch root holds the units, the stock units they name (sysinit.target,
# network-online.target, multi-user.target: verify loads their dependencies) and an
# executable stub at the path ExecStart names, which does not exist on a build machine.
# Everything else is verified for real: sections, directive names, values, the ExecStart
# path (a unit pointing anywhere but $INSTALLED_BINARY fails as "not executable").
root="$scratch/root"
mkdir -p "$root/etc/systemd/system" "$root/usr/lib/systemd" "$root$(dirname "$INSTALLED_BINARY")"
cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
printf '#!/bin/sh\nexit 0\n' >"$root$INSTALLED_BINARY"
chmod 0755 "$root$INSTALLED_BINARY"
# Other commands the units run (ExecReload's kill): stubbed only where this host has them too,
# so a path that exists on no Debian machine still fails.
for tool in /bin/kill; do
  [[ -x $tool ]] || die "$tool, which the units run, is not on this machine"
  mkdir -p "$root$(dirname "$tool")"
  printf '#!/bin/sh\nexit 0\n' >"$root$tool"
  chmod 0755 "$root$tool"
done
for unit in "${UNITS[@]}"; do
  [[ -f $unit ]] || die "$unit does not exist"
  cp "$unit" "$root/etc/systemd/system/"
done
for unit in "${UNITS[@]}"; do
  name=$(basename "$unit")
  # verify exits 0 on "Unknown key ..., ignoring", "Failed to parse ..., ignoring" and an
  # unknown section: systemd starts such a unit without the setting. So any output fails
  # the check. Nothing here is environmental: User= is not looked up, EnvironmentFile= is
  # optional (`-`), and no man page is looked for (--man=no), so a clean unit prints nothing.
  status=0
  out=$(systemd-analyze verify --man=no --root="$root" "$name" 2>&1) || status=$?
  if [[ $status -ne 0 || -n $out ]]; then
    echo "${out//$root\/etc\/systemd\/system\//deploy/systemd/}" >&2
    die "$unit: systemd-analyze verify reported the problems above"
  fi
done
# Wants=/After=/WantedBy= naming a unit that does not exist is no error to verify.
"$PY" scripts/check_deploy.py systemd-deps "$root" "${UNITS[@]}"

echo "==> promtool check rules / test rules (deploy/prometheus, $("$PROMTOOL" --version 2>&1 | head -1 | cut -d' ' -f1-3))"
"$PROMTOOL" check rules deploy/prometheus/citadel-rules.yml \
  || die "deploy/prometheus/citadel-rules.yml: promtool check rules failed"
"$PROMTOOL" test rules deploy/prometheus/citadel-rules.test.yml \
  || die "deploy/prometheus/citadel-rules.test.yml: promtool test rules failed"
"$PY" scripts/check_deploy.py alerts deploy/prometheus/citadel-rules.yml \
  deploy/prometheus/citadel-rules.test.yml deploy/README.md

echo "==> kubernetes manifests (deploy/kubernetes, strict schemas)"
"$PY" scripts/check_deploy.py kubernetes deploy/kubernetes

echo "==> grafana dashboard (deploy/grafana/citadel-dashboard.json)"
"$PY" scripts/check_deploy.py grafana deploy/grafana/citadel-dashboard.json "$scratch/panels.yml"
# Each panel query as a recording rule: promtool parses the PromQL.
"$PROMTOOL" check rules "$scratch/panels.yml" >"$scratch/panels.log" 2>&1 || {
  cat "$scratch/panels.log" >&2
  die "deploy/grafana/citadel-dashboard.json: a panel query is not valid PromQL (grafana_panel_<id>_<refId> above)"
}
echo "==> deploy checks passed"
