# shellcheck shell=bash
# Shared by scripts/firewall/*.sh: the per-role rules (the security groups, in one place), the
# env file reader and the dry-run / --apply runner. Source it; do not run it.
#
#   role        inbound allowed (everything else dropped; outbound open)
#   vm1-kafka      9092/tcp from PROCESSOR_PRIVATE_IP, PRODUCERS_PRIVATE_IP; 22/tcp from ADMIN_IP
#   vm1-kafka-cluster  (each of three Kafka VMs) as vm1-kafka, plus 9092/tcp (replication) and
#                  9093/tcp (KRaft quorum) from KAFKA_1/2/3_PRIVATE_IP
#   vm2-mongo     27017/tcp from PROCESSOR_PRIVATE_IP;                      22/tcp from ADMIN_IP
#   vm3-processor  8080/tcp from ADMIN_IP;                                  22/tcp from ADMIN_IP
#   vm4-producers                                                           22/tcp from ADMIN_IP

FIREWALL_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$FIREWALL_DIR/../.." && pwd)
# shellcheck disable=SC2034  # used by the scripts that source this file
DEFAULT_ENV_FILE="$REPO_DIR/compose/.env.example"
# shellcheck disable=SC2034
ROLES=(vm1-kafka vm1-kafka-cluster vm2-mongo vm3-processor vm4-producers)
KAFKA_NODES=(KAFKA_1_PRIVATE_IP KAFKA_2_PRIVATE_IP KAFKA_3_PRIVATE_IP)

# Settings read from the env file, with the defaults of compose/.env.example for the ports.
declare -A CONF=(
  [KAFKA_PRIVATE_IP]='' [MONGO_PRIVATE_IP]='' [PROCESSOR_PRIVATE_IP]=''
  [PRODUCERS_PRIVATE_IP]='' [ADMIN_IP]=''
  [KAFKA_1_PRIVATE_IP]='' [KAFKA_2_PRIVATE_IP]='' [KAFKA_3_PRIVATE_IP]=''
  [KAFKA_PORT]=9092 [KAFKA_CONTROLLER_PORT]=9093 [MONGO_PORT]=27017 [PROCESSOR_PORT]=8080
  [SSH_PORT]=22
)

# parse_role_args PROG ARGS...: `ROLE [--env-file FILE] [--apply]` -> role, env_file, APPLY.
# shellcheck disable=SC2034  # role and env_file are read by the scripts that call it
parse_role_args() {
  local prog=$1
  shift
  local usage="usage: $prog ROLE [--env-file FILE] [--apply]   (ROLE: ${ROLES[*]})"
  role=${1:-}
  [[ -n $role && $role != -* ]] || { echo "$usage" >&2; exit 2; }
  shift
  env_file=$DEFAULT_ENV_FILE
  while (($#)); do
    case $1 in
      --env-file) env_file=${2:?--env-file needs a path}; shift 2 ;;
      --apply) APPLY=1; shift ;;
      -h | --help) echo "$usage" >&2; exit 2 ;;
      *) die "unknown argument '$1'" ;;
    esac
  done
}

die() {
  echo "firewall: $*" >&2
  exit 2
}

# load_env FILE: read only the keys above (the file is never executed: values may hold spaces).
load_env() {
  local file=$1 line key value
  [[ -r $file ]] || die "cannot read env file $file"
  while IFS= read -r line || [[ -n $line ]]; do
    [[ $line =~ ^[[:space:]]*([A-Z_][A-Z0-9_]*)=(.*)$ ]] || continue
    key=${BASH_REMATCH[1]}
    value=${BASH_REMATCH[2]}
    value=${value%\"}; value=${value#\"}; value=${value%\'}; value=${value#\'}
    [[ -v CONF[$key] ]] && CONF[$key]=$value
  done <"$file"
  local addresses=(KAFKA_PRIVATE_IP MONGO_PRIVATE_IP PROCESSOR_PRIVATE_IP PRODUCERS_PRIVATE_IP
    ADMIN_IP)
  # The three nodes' addresses are needed (and commented out in .env.example) only there.
  [[ ${role:-} == vm1-kafka-cluster ]] && addresses+=("${KAFKA_NODES[@]}")
  for key in "${addresses[@]}"; do
    [[ ${CONF[$key]} =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}$ ]] \
      || die "$key in $file must be an IPv4 address, got '${CONF[$key]}'"
  done
  for key in KAFKA_PORT KAFKA_CONTROLLER_PORT MONGO_PORT PROCESSOR_PORT SSH_PORT; do
    [[ ${CONF[$key]} =~ ^[0-9]{1,5}$ ]] || die "$key in $file must be a port, got '${CONF[$key]}'"
  done
}

# role_rules ROLE: one "PORT SOURCE_IP LABEL" line per allowed inbound flow.
role_rules() {
  # SSH first: applied in this order, a half-applied rule set still lets the admin in.
  echo "${CONF[SSH_PORT]} ${CONF[ADMIN_IP]} ssh-from-admin"
  case $1 in
    vm1-kafka | vm1-kafka-cluster)
      echo "${CONF[KAFKA_PORT]} ${CONF[PROCESSOR_PRIVATE_IP]} kafka-from-processor"
      echo "${CONF[KAFKA_PORT]} ${CONF[PRODUCERS_PRIVATE_IP]} kafka-from-producers"
      if [[ $1 == vm1-kafka-cluster ]]; then
        local n
        for n in 1 2 3; do
          echo "${CONF[KAFKA_PORT]} ${CONF[KAFKA_${n}_PRIVATE_IP]} replication-from-node-$n"
          echo "${CONF[KAFKA_CONTROLLER_PORT]} ${CONF[KAFKA_${n}_PRIVATE_IP]} quorum-from-node-$n"
        done
      fi
      ;;
    vm2-mongo)
      echo "${CONF[MONGO_PORT]} ${CONF[PROCESSOR_PRIVATE_IP]} mongo-from-processor"
      ;;
    vm3-processor)
      echo "${CONF[PROCESSOR_PORT]} ${CONF[ADMIN_IP]} api-from-admin"
      ;;
    vm4-producers) ;;
    *) die "unknown role '$1' (one of: ${ROLES[*]})" ;;
  esac
}

# role_published_ports ROLE: the ports Docker publishes on that role's VM (none for vm4).
role_published_ports() {
  case $1 in
    vm1-kafka) echo "${CONF[KAFKA_PORT]}" ;;
    vm1-kafka-cluster) echo "${CONF[KAFKA_PORT]} ${CONF[KAFKA_CONTROLLER_PORT]}" ;;
    vm2-mongo) echo "${CONF[MONGO_PORT]}" ;;
    vm3-processor) echo "${CONF[PROCESSOR_PORT]}" ;;
    *) echo "" ;;
  esac
}

# run CMD...: print the command; execute it too when APPLY=1.
APPLY=0
run() {
  echo "+ $*"
  if ((APPLY)); then
    "$@"
  fi
}
