-- wrk script: POST the sync hook for members picked at random from USERS_FILE, whose lines
-- are "discord_id user_pk". Every member was synced once before, so each call finds nothing
-- to change: this measures the steady state of logins.
local bodies = {}

function init(args)
  for line in io.lines(os.getenv("USERS_FILE")) do
    local id, pk = line:match("^(%d+) (%d+)$")
    if id then
      bodies[#bodies + 1] = string.format('{"discord_id":"%s","user_pk":%s}', id, pk)
    end
  end
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("WEBHOOK_SECRET")

function request()
  return wrk.format(nil, nil, nil, bodies[math.random(#bodies)])
end

function done(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT requests=%d non2xx_or_errors=%d rps=%.0f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f\n",
    summary.requests, errors, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
