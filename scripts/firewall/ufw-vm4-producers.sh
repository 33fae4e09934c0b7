#!/usr/bin/env bash
# ufw rules of vm4-producers (see ufw.sh and common.sh). Dry run unless --apply.
#   scripts/firewall/ufw-vm4-producers.sh [--env-file compose/.env] [--apply]
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/ufw.sh" vm4-producers "$@"
