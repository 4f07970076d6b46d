#!/usr/bin/env bash
# Load run of a full pass: a guild of N members (default 100,000), Authentik already in line
# with it, then one role changed for 1 % of the members. Measures the pass that repairs them.
#
#   ./test/load/fullpass.sh [members]
#
# Prints the wall time and peak memory of `bridge sync --all` (from /usr/bin/time), and the
# calls each stand-in received against the lower bound.
set -euo pipefail
cd "$(dirname "$0")/../.."
members=${1:-100000}
out=test/load/out-fullpass
rm -rf "$out" && mkdir -p "$out/data"
go build -o "$out/bridge" ./cmd/bridge
go build -o "$out/standins" ./test/standins

# No avatar images: the seed cannot know where the bridge would host them, so every changed
# member would have its first avatar made, which a real steady state has done long before.
# Their CDN fetches (answered 404) are counted apart below.
"$out/standins" -members "$members" -converged -stale-share 0.01 -avatar "" -env-out "$out/bridge.env" \
  >"$out/standins.json" 2>"$out/standins.log" &
standins=$!
trap 'kill $standins 2>/dev/null || true' EXIT
for _ in $(seq 3000); do [ -s "$out/bridge.env" ] && break; sleep 0.1; done
run() {
  BRIDGE_DATA_DIR=$out/data BRIDGE_LOG_LEVEL=warn BRIDGE_MAX_REMOVAL_SHARE=1 \
    /usr/bin/time -f "wall_s=%e max_rss_kb=%M" "$out/bridge" --env-file "$out/bridge.env" sync --all
}

# First pass over a fresh data directory: learns every user's fingerprint from the group
# listing, changes nothing.
echo "== first pass (fresh data directory, nothing to change)"
run 2>&1 | grep -E "members|applied|wall_s"
kill -USR2 $standins; sleep 1   # 1 % of the members get another role
kill -USR1 $standins; sleep 0.2 # zero the counters
echo "== second pass (1 % out of date)"
run 2>&1 | grep -E "members|applied|wall_s"

kill -TERM $standins; wait $standins || true
python3 - "$out/standins.json" "$members" <<'PY'
import json, math, sys
c = json.load(open(sys.argv[1])); n = int(sys.argv[2])
routes = c["authentik_routes"]
cdn = sum(v for k, v in c["discord_routes"].items() if "/cdn/" in k)
api = c["discord_calls"] - cdn
writes = c["authentik_writes"]
member_pages = math.floor(n / 1000) + 1
conn_pages = math.ceil(n / 100)
group_pages = sum(v for k, v in routes.items() if k.startswith("GET /api/v3/core/groups/"))
bound = member_pages + conn_pages + group_pages + writes
total = c["authentik_reads"] + writes + api
print(f"discord API calls {api} (member pages {member_pages} + roles 1), CDN fetches {cdn}, "
      f"authentik reads {c['authentik_reads']}, writes {writes}")
print(f"lower bound {bound} = member pages {member_pages} + connection pages {conn_pages} "
      f"+ group pages {group_pages} + writes {writes}; API calls made {total} = {total/bound:.3f} x bound")
for k, v in sorted(routes.items()):
    print(f"  {v:7d} {k}")
PY
