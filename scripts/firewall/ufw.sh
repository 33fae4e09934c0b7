#!/usr/bin/env bash
# Host firewall of one VM role with ufw, mirroring the cloud security groups.
#
#   scripts/firewall/ufw.sh ROLE [--env-file FILE] [--apply]
#   scripts/firewall/ufw-vm1-kafka.sh [--env-file compose/.env] [--apply]     # same, role fixed
#
# Dry run by default: prints the commands. --apply runs them (root). Addresses and ports come
# from the env file (default compose/.env.example). Re-running is safe: ufw skips existing
# rules and the DOCKER-USER rules are checked (-C) before they are inserted.
#
# Why DOCKER-USER too: a port published by Docker is DNAT-ed to the container and goes through
# the FORWARD chain, which ufw's INPUT rules never see. Docker leaves the DOCKER-USER chain to
# the administrator; the rules there admit the role's sources to the published port and drop
# everyone else (matched on the original destination port, before DNAT).
set -euo pipefail
# shellcheck source=scripts/firewall/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

parse_role_args "$0" "$@"
load_env "$env_file"
rules=$(role_rules "$role")

if ((APPLY)); then
  [[ $(id -u) -eq 0 ]] || die "--apply needs root"
  command -v ufw >/dev/null || die "ufw is not installed (apt-get install ufw)"
fi
echo "# $role: ufw rules from $env_file$( ((APPLY)) || echo ' (dry run; --apply to run them)')"

run ufw default deny incoming
run ufw default allow outgoing
# Rules before `enable`, SSH first (role_rules): enabling must never lock the admin out.
while read -r port source label; do
  run ufw allow proto tcp from "$source" to any port "$port" comment "gtc:$role:$label"
done <<<"$rules"
run ufw --force enable

docker_user() {
  # -C first: only insert what is missing, so a second run adds nothing.
  if ((APPLY)) && iptables -C DOCKER-USER "$@" 2>/dev/null; then
    echo "= iptables -I DOCKER-USER $* (present)"
  else
    run iptables -I DOCKER-USER "$@"
  fi
}
for published in $(role_published_ports "$role"); do
  echo "# $role: Docker-published port $published (DOCKER-USER chain, before Docker's own rules)"
  match=(-p tcp -m conntrack --ctorigdstport "$published" --ctdir ORIGINAL)
  # -I puts each rule on top: the DROP goes in first, so the RETURNs end up above it.
  docker_user "${match[@]}" -j DROP
  while read -r port source label; do
    [[ $port == "$published" ]] || continue
    docker_user "${match[@]}" -s "$source" -j RETURN
  done <<<"$rules"
done
