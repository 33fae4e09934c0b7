#!/usr/bin/env bash
# ufw rules of vm2-mongo (see ufw.sh and common.sh). Dry run unless --apply.
#   scripts/firewall/ufw-vm2-mongo.sh [--env-file compose/.env] [--apply]
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/ufw.sh" vm2-mongo "$@"
