#!/usr/bin/env bash
# Smoke test of a running deployment: is the API up, does an event travel end to end, is it priced?
#
#   PROCESSOR_URL=http://10.10.0.13:8080 KAFKA_BOOTSTRAP=10.10.0.11:9092 scripts/smoke-test.sh
#
# Points at any deployment (compose on four VMs, single host, the local stack, the namespace
# simulation) through the environment:
#   PROCESSOR_URL     processor API                        (default http://127.0.0.1:8080)
#   KAFKA_BOOTSTRAP   Kafka, for the producer it runs      (default 127.0.0.1:9092)
#   SMOKE_EVENTS      token events to produce              (default 200)
#   SMOKE_TIMEOUT_S   how long they may take to be stored  (default 60)
#   SMOKE_HEALTH_WAIT_S  how long /health may stay 503 at first (default 60: a replica that
#                     just started needs a rebalance before it owns partitions)
#   SMOKE_HOST        the `host` of the events (default smoke-<time>-<pid>): a name of its
#                     own, so /api/v1/costs?host=... sees exactly this run's events
#   PYTHON            interpreter with the project installed (default .venv/bin/python, else python3)
#   PRODUCER_CMD      command that runs the producer CLI (default "$PYTHON -m producers"); the
#                     test appends `run --count N --rate max --bootstrap ... --host ...`. Split on
#                     spaces, e.g. "ip netns exec gtc-vm4 /repo/.venv/bin/python -m producers" when
#                     only the producers' host may reach Kafka (scripts/vmsim.py does this)
#   MONGO_URL, MONGO_DB  optional: also count this run's documents in MongoDB directly
#
# Counting goes through the processor's /api/v1/stats, so the host running this test needs to
# reach the processor only (the firewall lets the admin host reach nothing else).
# Prints one `PASS <step>` or `FAIL <step>: <reason>` line per step; exits 0 only if all pass.
set -euo pipefail

case ${1:-} in
  -h | --help)
    # The comment block above is the usage.
    sed -n '2,/^set -euo pipefail$/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
  "") ;;
  *)
    echo "smoke-test.sh: unexpected argument '$1' (it is configured by environment; see --help)" >&2
    exit 2
    ;;
esac

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROCESSOR_URL=${PROCESSOR_URL:-http://127.0.0.1:8080}
PROCESSOR_URL=${PROCESSOR_URL%/}
KAFKA_BOOTSTRAP=${KAFKA_BOOTSTRAP:-127.0.0.1:9092}
SMOKE_EVENTS=${SMOKE_EVENTS:-200}
SMOKE_TIMEOUT_S=${SMOKE_TIMEOUT_S:-60}
SMOKE_HEALTH_WAIT_S=${SMOKE_HEALTH_WAIT_S:-60}
SMOKE_HOST=${SMOKE_HOST:-smoke-$(date +%s)-$$}
MONGO_URL=${MONGO_URL:-}
MONGO_DB=${MONGO_DB:-gpu_cost}
if [[ -z ${PYTHON:-} ]]; then
  if [[ -x $REPO/.venv/bin/python ]]; then PYTHON=$REPO/.venv/bin/python; else PYTHON=python3; fi
fi
PRODUCER_CMD=${PRODUCER_CMD:-$PYTHON -m producers}
export PROCESSOR_URL SMOKE_HOST SMOKE_EVENTS MONGO_URL MONGO_DB

[[ $SMOKE_EVENTS =~ ^[1-9][0-9]*$ ]] || { echo "FAIL config: SMOKE_EVENTS must be >= 1"; exit 1; }
[[ $SMOKE_TIMEOUT_S =~ ^[0-9]+$ ]] || { echo "FAIL config: SMOKE_TIMEOUT_S must be seconds"; exit 1; }

failed=0
pass() { echo "PASS $1"; }
fail() {
  local reason=${2//$'\n'/ | }
  echo "FAIL $1: ${reason:0:400}"
  failed=$((failed + 1))
}

# py STEP: run the Python check read from stdin; its stdout is the result (or the reason it
# failed, with a non-zero exit). Only the standard library: works with any python3.
py() { "$PYTHON" - "$@" 2>&1; }

# The HTTP helper every check shares: get(path) -> (status, parsed JSON or None).
read -r -d '' HTTP_PY <<'PY' || true
import json, os, urllib.error, urllib.request
BASE = os.environ["PROCESSOR_URL"]
def get(path, timeout=10):
    """(HTTP status, parsed JSON body); status 0 and {"error": ...} when nothing answered."""
    try:
        with urllib.request.urlopen(BASE + path, timeout=timeout) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except OSError as exc:
        return 0, {"error": f"cannot reach {BASE}: {getattr(exc, 'reason', exc)}"}
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None
def why(status, body):
    if status == 0:
        return body["error"]
    return f"HTTP {status}: {str(body)[:200]}"
PY
export HTTP_PY

# ---- health: 200 and status ok (bounded wait: a fresh replica may still be joining the group)
if out=$(py "$SMOKE_HEALTH_WAIT_S" <<'PY'
import os, sys, time, urllib.error
exec(os.environ["HTTP_PY"])
deadline = time.monotonic() + float(sys.argv[1])
last = "no answer"
while True:
    status, body = get("/health", timeout=5)
    if status == 200 and isinstance(body, dict) and body.get("status") == "ok":
        parts = body.get("consumer", {}).get("assigned_partitions", [])
        print(f"status ok, {len(parts)} partitions assigned")
        sys.exit(0)
    if status == 0:
        last = why(status, body)
    else:
        failing = body.get("failing") if isinstance(body, dict) else None
        last = f"HTTP {status}, status={body.get('status') if isinstance(body, dict) else None}, failing={failing}"
    if time.monotonic() >= deadline:
        print(f"{last} (after {sys.argv[1]} s)")
        sys.exit(1)
    time.sleep(1)
PY
); then pass "health ($out)"; else fail health "$out"; fi

# ---- gpu-info: this host's GPUs answered by some source (nvml, nvidia-smi or seed)
if out=$(py <<'PY'
import os, sys
exec(os.environ["HTTP_PY"])
status, body = get("/gpu/info")
if status != 200 or not isinstance(body, dict):
    print(why(status, body)); sys.exit(1)
local = body.get("local") or {}
if not local.get("source"):
    print(f"no GPU source: {local.get('error') or local.get('skipped')}"); sys.exit(1)
print(f"source={local['source']}, {len(local.get('gpus') or [])} GPUs")
PY
); then pass "gpu-info ($out)"; else fail gpu-info "$out"; fi

# ---- stats-before: document counts before this run's events
before=""
if out=$(py <<'PY'
import os, sys
exec(os.environ["HTTP_PY"])
status, body = get("/api/v1/stats")
if status != 200 or not isinstance(body, dict) or "token_usage" not in body:
    print(why(status, body)); sys.exit(1)
print(int(body["token_usage"]))
PY
); then
  before=$out
  pass "stats-before (token_usage=$before)"
else
  fail stats-before "$out"
fi

# ---- produce: SMOKE_EVENTS token events through the real producer, all delivered
read -r -a producer <<<"$PRODUCER_CMD"
produced=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if (cd "$REPO" && "${producer[@]}" run --count "$SMOKE_EVENTS" --rate max \
  --bootstrap "$KAFKA_BOOTSTRAP" --host "$SMOKE_HOST" --progress 0) >"$log" 2>&1; then
  summary=$(grep -E '^summary ' "$log" | tail -n 1 || true)
  if [[ $summary =~ delivered=([0-9]+) ]] && [[ $summary =~ failed=0( |$) ]]; then
    produced=$SMOKE_EVENTS
    pass "produce ($summary)"
  else
    fail produce "no clean summary line: ${summary:-$(tail -n 3 "$log" | tr '\n' ' ')}"
  fi
else
  fail produce "producer exited $?: $(tail -n 3 "$log" | tr '\n' ' ')"
fi

# ---- stored: token_usage rose by SMOKE_EVENTS (>=: other producers may be running too)
if [[ -z $before ]]; then
  fail stored "no count before the run (stats-before failed)"
elif ((produced == 0)); then
  fail stored "nothing was produced"
elif out=$(py "$before" "$SMOKE_TIMEOUT_S" <<'PY'
import os, sys, time
exec(os.environ["HTTP_PY"])
before, timeout = int(sys.argv[1]), float(sys.argv[2])
want = before + int(os.environ["SMOKE_EVENTS"])
start = time.monotonic()
count = before
while True:
    status, body = get("/api/v1/stats")
    if status == 200 and isinstance(body, dict):
        count = int(body["token_usage"])
    if count >= want:
        print(f"token_usage {before} -> {count} in {time.monotonic() - start:.1f} s"); sys.exit(0)
    if time.monotonic() - start >= timeout:
        print(f"token_usage {before} -> {count}, wanted >= {want} within {timeout:.0f} s")
        sys.exit(1)
    time.sleep(0.5)
PY
); then pass "stored ($out)"; else fail stored "$out"; fi

# ---- costs: this run's host has priced rows, and exactly SMOKE_EVENTS requests
if ((produced == 0)); then
  fail costs "nothing was produced"
elif out=$(py "$SMOKE_TIMEOUT_S" <<'PY'
import os, sys, time
from urllib.parse import quote
exec(os.environ["HTTP_PY"])
host, want = os.environ["SMOKE_HOST"], int(os.environ["SMOKE_EVENTS"])
deadline = time.monotonic() + float(sys.argv[1])
path = f"/api/v1/costs?group_by=host&granularity=hour&host={quote(host)}"
while True:
    status, body = get(path)
    rows = body.get("rows", []) if isinstance(body, dict) else []
    totals = body.get("totals", {}) if isinstance(body, dict) else {}
    priced = [r for r in rows if r.get("tokens", 0) > 0 and r.get("cost_usd", 0) > 0]
    if status == 200 and priced and totals.get("requests") == want:
        per_1m = totals.get("cost_per_1m_tokens")
        print(f"{len(priced)} row(s), requests={want}, tokens={totals['tokens']}, "
              f"cost_usd={totals['cost_usd']:.6f}, ${per_1m:.2f} per 1M tokens")
        sys.exit(0)
    if time.monotonic() >= deadline:
        print(why(status, body) if status != 200 else f"rows={rows[:2]}, totals={totals}")
        sys.exit(1)
    time.sleep(1)
PY
); then pass "costs ($out)"; else fail costs "$out"; fi

# ---- mongo (optional): this run's documents are in MongoDB itself
if [[ -n $MONGO_URL ]]; then
  if out=$(py <<'PY'
import os, sys
try:
    from pymongo import MongoClient
except ImportError:
    print("pymongo is not installed for this PYTHON"); sys.exit(1)
client = MongoClient(os.environ["MONGO_URL"], serverSelectionTimeoutMS=5000)
n = client[os.environ["MONGO_DB"]]["token_usage"].count_documents({"host": os.environ["SMOKE_HOST"]})
want = int(os.environ["SMOKE_EVENTS"])
print(f"token_usage documents of {os.environ['SMOKE_HOST']}: {n}")
sys.exit(0 if n == want else 1)
PY
  ); then pass "mongo ($out)"; else fail mongo "$out"; fi
fi

if ((failed)); then
  echo "smoke-test: $failed step(s) failed against $PROCESSOR_URL"
  exit 1
fi
echo "smoke-test: all steps passed against $PROCESSOR_URL"
