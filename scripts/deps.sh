#!/usr/bin/env bash
# Installs what Herald's tests need on a Debian machine, only when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
# The conformance suite drives pusher-js in a real browser.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
# Cluster tests start their own redis-server processes (and redis-cli for Redis Cluster).
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "deps: installing ${need_apt[*]} with apt-get"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

# Node packages for the conformance suite (official clients and SDKs), from the
# committed lockfile. Reinstalled only when the lockfile changed.
js=test/conformance
if [ ! -f "$js/node_modules/.package-lock.json" ] || [ "$js/package-lock.json" -nt "$js/node_modules/.package-lock.json" ]; then
  echo "deps: npm ci in $js"
  (cd "$js" && npm ci --no-audit --no-fund --loglevel=error)
fi
