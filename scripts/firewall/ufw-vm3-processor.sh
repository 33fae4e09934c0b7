#!/usr/bin/env bash
# ufw rules of vm3-processor (see ufw.sh and common.sh). Dry run unless --apply.
#   scripts/firewall/ufw-vm3-processor.sh [--env-file compose/.env] [--apply]
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/ufw.sh" vm3-processor "$@"
