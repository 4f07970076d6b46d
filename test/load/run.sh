#!/usr/bin/env bash
# Load run of the sync hook against the real binary, stand-ins answering without delay.
#
#   ./test/load/run.sh [duration] [connections]     (defaults: 20s, 32)
#
# Needs wrk (Debian package "wrk"). Prints wrk's figures, then the calls per hook request that
# reached each stand-in.
set -euo pipefail
cd "$(dirname "$0")/../.."
duration=${1:-20s}
conns=${2:-32}
out=test/load/out
rm -rf "$out" && mkdir -p "$out/data"

command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)"; exit 1; }
go build -o "$out/bridge" ./cmd/bridge
go build -o "$out/standins" ./test/standins

"$out/standins" -members 1000 -env-out "$out/bridge.env" -users-out "$out/users.txt" \
  >"$out/standins.json" 2>"$out/standins.log" &
standins=$!
bridge=""
cleanup() { kill $bridge $standins 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 300); do [ -s "$out/bridge.env" ] && break; sleep 0.1; done

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# Full passes are off: the start-up pass would sync the other 800 members during the run and
# measure the queue rather than the hook.
BRIDGE_LISTEN=127.0.0.1:$port BRIDGE_DATA_DIR=$out/data BRIDGE_LOG_LEVEL=warn BRIDGE_RESYNC_INTERVAL=0 \
  "$out/bridge" --env-file "$out/bridge.env" serve 2>"$out/bridge.log" &
bridge=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done

secret=$(grep '^BRIDGE_WEBHOOK_SECRET=' "$out/bridge.env" | cut -d= -f2)
# The first sync of each member writes its groups; the load run then measures unchanged ones.
head -n 200 "$out/users.txt" >"$out/load-users.txt"
while read -r id pk; do
  curl -sf -o /dev/null -H "Authorization: Bearer $secret" -H 'Content-Type: application/json' \
    -d "{\"discord_id\":\"$id\",\"user_pk\":$pk}" "http://127.0.0.1:$port/v1/authentik/sync"
done <"$out/load-users.txt"
kill -USR1 $standins   # zero the stand-ins' counters

[ -n "${PERF_OUT:-}" ] && (perf record -F 499 -g -o "$PERF_OUT" -p $bridge -- sleep 10 >/dev/null 2>&1 &)
USERS_FILE=$out/load-users.txt WEBHOOK_SECRET=$secret \
  wrk -t"${WRK_THREADS:-2}" -c"$conns" -d"$duration" --latency -s test/load/sync.lua \
  "http://127.0.0.1:$port/v1/authentik/sync" | tee "$out/wrk.txt"

kill -TERM $standins; wait $standins || true
requests=$(sed -n 's/^RESULT requests=\([0-9]*\).*/\1/p' "$out/wrk.txt")
python3 - "$out/standins.json" "$requests" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); n = int(sys.argv[2])
print(f"per hook call: discord {c['discord_calls']/n:.3f} calls, "
      f"authentik {c['authentik_reads']/n:.3f} reads, {c['authentik_writes']/n:.3f} writes "
      f"({n} calls)")
PY
