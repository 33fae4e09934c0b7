#!/usr/bin/env bash
# Debian packages the deployment checks need, installed only when missing (idempotent):
#   docker-compose  1.29: `docker-compose config -q` validates compose/*.yml without a daemon
#   prometheus      promtool: `promtool check config compose/monitoring/prometheus.yml`
#   nftables        nft: the per-role firewall rulesets of the four-host simulation
#   iproute2        ip netns / ip link: the simulation's isolated hosts
#   the linter      shellcheck, for scripts/*.sh
#   nodejs          node: runs compose/mongo-init/*.js against a stub in the compose tests
#   chromium        + chromium-driver: the page's headless-browser test (tests/e2e/test_page.py)
#   openssl         the CA and broker certificate of `stack.py up --security sasl-ssl`
# Run as root (CI and the dev machines are root); prints what it installs.
set -euo pipefail

# tool on PATH -> Debian package that brings it
declare -A WANT=(
  [docker-compose]=docker-compose
  [promtool]=prometheus
  [nft]=nftables
  [ip]=iproute2
  [shellcheck]=shellcheck
  [node]=nodejs
  [chromium]=chromium
  [chromedriver]=chromium-driver
  [openssl]=openssl
)

missing=()
for tool in "${!WANT[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${WANT[$tool]}")
done

if ((${#missing[@]} == 0)); then
  echo "setup-debian: all tools present (docker-compose promtool nft ip shellcheck node chromium chromedriver openssl)"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "setup-debian: need root to install: ${missing[*]}" >&2
  exit 1
fi

echo "setup-debian: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# --no-install-recommends: prometheus would otherwise pull its web console and exporters.
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup-debian: done"
