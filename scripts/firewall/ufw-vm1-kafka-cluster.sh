#!/usr/bin/env bash
# ufw rules of vm1-kafka-cluster (see ufw.sh and common.sh). Dry run unless --apply.
#   scripts/firewall/ufw-vm1-kafka-cluster.sh [--env-file compose/.env] [--apply]
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/ufw.sh" vm1-kafka-cluster "$@"
