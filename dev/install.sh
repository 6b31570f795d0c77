#!/usr/bin/env bash
# Install everything the demo, the tests and the benchmarks need on a fresh Debian 12 machine
# (idempotent).
# Python environment and node packages go under $CARTA_HUB_PREFIX (default /opt/carta-hub),
# world-readable, so servers spawned as other users can run them.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
prefix=${CARTA_HUB_PREFIX:-/opt/carta-hub}
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"

apt_packages=(python3-venv slurm-wlm slurmrestd munge slapd ldap-utils chromium chromium-driver sudo libnss-wrapper iproute2 util-linux socat)
missing=()
command -v npm >/dev/null || missing+=(nodejs npm)
for p in "${apt_packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== apt: installing ${missing[*]}"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
# The Debian packages start their daemons; tests run their own on loopback. Only once: without
# systemd, `service slurmctld stop` ends every slurmctld, the test suite's own too (tests run
# `make demo`, which runs this script, while the suite's Slurm cluster is up).
if [ ! -e "$prefix/.daemons-stopped" ]; then
  for svc in slapd slurmctld slurmd munge; do
    $sudo systemctl disable --now "$svc" >/dev/null 2>&1 || $sudo service "$svc" stop >/dev/null 2>&1 || true
  done
  $sudo mkdir -p "$prefix" && $sudo touch "$prefix/.daemons-stopped"
fi

$sudo mkdir -p "$prefix/node"
$sudo cp "$here/dev/node/package.json" "$prefix/node/package.json"
if ! cmp -s "$here/dev/node/package.json" "$prefix/node/.installed" 2>/dev/null; then
  echo "== npm: installing into $prefix/node"
  (cd "$prefix/node" && $sudo npm install --no-audit --no-fund --loglevel=error)
  $sudo cp "$prefix/node/package.json" "$prefix/node/.installed"
fi

if ! "$prefix/venv/bin/python" -m pip --version >/dev/null 2>&1; then
  echo "== venv: $prefix/venv from /usr/bin/python3"
  $sudo rm -rf "$prefix/venv"; $sudo /usr/bin/python3 -m venv "$prefix/venv"
  $sudo "$prefix/venv/bin/python" -m pip install -q --upgrade pip
fi
echo "== pip: carta-hub and its extras into $prefix/venv"
$sudo "$prefix/venv/bin/python" -m pip install -q --upgrade "$here[kubernetes,slurm,ldap,oauth,culler,lab,test]"
echo "== pip: carta-standin (the tests' and the demo's stand-in backend, not CARTA)"
$sudo "$prefix/venv/bin/python" -m pip install -q --upgrade "$here/standin"
$sudo chmod -R a+rX "$prefix"
