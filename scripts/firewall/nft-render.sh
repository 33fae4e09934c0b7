#!/usr/bin/env bash
# Render (and optionally load) the nftables ruleset of one VM role.
#
#   scripts/firewall/nft-render.sh ROLE [--env-file FILE] [--apply]
#
# Prints `define` lines built from the env file (default compose/.env.example) followed by
# scripts/firewall/nft-ROLE.nft. --apply loads it with `nft -f -` (root) in the current
# network namespace: run it under `ip netns exec NS` to firewall a namespace, as vmsim does.
# Loading twice is safe (the ruleset replaces its own table atomically).
#
# On a VM that runs Docker, published ports bypass the input chain (DNAT + forward): use
# ufw.sh there, whose DOCKER-USER rules cover them. These rulesets fit hosts that run the
# services as plain processes (and the namespace simulation).
set -euo pipefail
# shellcheck source=scripts/firewall/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

parse_role_args "$0" "$@"
template="$FIREWALL_DIR/nft-$role.nft"
[[ -r $template ]] || die "unknown role '$role' (one of: ${ROLES[*]})"
load_env "$env_file"

render() {
  echo "# rendered by scripts/firewall/nft-render.sh $role from $env_file"
  echo "define admin_ip = ${CONF[ADMIN_IP]}"
  echo "define kafka_ip = ${CONF[KAFKA_PRIVATE_IP]}"
  echo "define mongo_ip = ${CONF[MONGO_PRIVATE_IP]}"
  echo "define processor_ip = ${CONF[PROCESSOR_PRIVATE_IP]}"
  echo "define producers_ip = ${CONF[PRODUCERS_PRIVATE_IP]}"
  echo "define kafka_port = ${CONF[KAFKA_PORT]}"
  echo "define mongo_port = ${CONF[MONGO_PORT]}"
  echo "define processor_port = ${CONF[PROCESSOR_PORT]}"
  echo "define ssh_port = ${CONF[SSH_PORT]}"
  if [[ $role == vm1-kafka-cluster ]]; then
    echo "define kafka_controller_port = ${CONF[KAFKA_CONTROLLER_PORT]}"
    echo "define kafka_nodes = {${CONF[KAFKA_1_PRIVATE_IP]},${CONF[KAFKA_2_PRIVATE_IP]},${CONF[KAFKA_3_PRIVATE_IP]}}"
  fi
  cat "$template"
}

if ((APPLY)); then
  [[ $(id -u) -eq 0 ]] || die "--apply needs root"
  command -v nft >/dev/null || die "nft is not installed (make setup)"
  render | nft -f -
  echo "nft: loaded $role ruleset (table inet gtc_filter)"
else
  render
fi
