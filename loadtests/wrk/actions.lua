-- wrk script: POST /api/v1/actions/verify with envelopes pre-signed by
-- loadtests/presign (one nonce each), as a lighter load generator than k6.
--
-- k6 costs more than a core at 2,500 requests/s on this 2-core machine, so it takes
-- half the machine from the server it measures; wrk (C, epoll, one Lua state per
-- thread) costs a fraction of that. wrk is a closed-loop generator: each connection
-- sends its next request when the previous answer arrives, so it measures the
-- throughput the server sustains at a given concurrency and the latency at that
-- throughput, not latency at a fixed offered rate (k6's open model does that).
--
-- Environment:
--   ENVELOPES  file of envelopes, one JSON document per line (agentid-presign actions)
--   WRK_THREADS wrk's -t (each thread takes every WRK_THREADS-th line)
--   SKIP       lines to skip first (envelopes an earlier run spent; default 0)
--   WRK_OUT    where done() writes the run's numbers as JSON (optional)
--   WRK_DELAY_MS  pause before each request of a connection (default 0: none); with c
--              connections the rate stays below c * 1000 / WRK_DELAY_MS per second, a
--              paced background load rather than a saturating one
-- Each thread sends the lines i with i % threads == thread id, each at most once:
-- a thread that runs out stops its connections (an envelope sent twice would be a
-- replay and come back denied). Every answer must be 200 with "allowed":true; any
-- other answer is counted as an error.

local threads = {}
local counter = 0

local pause = tonumber(os.getenv("WRK_DELAY_MS") or "0")
if pause > 0 then
  function delay()
    return pause
  end
end

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  bodies = {}
  local path = os.getenv("ENVELOPES")
  if path == nil then
    error("ENVELOPES is not set")
  end
  local total = tonumber(os.getenv("WRK_THREADS") or "1")
  local skip = tonumber(os.getenv("SKIP") or "0")
  local i = 0
  for line in io.lines(path) do
    if skip > 0 then
      skip = skip - 1
    elseif #line > 0 then
      if i % total == tid then
        bodies[#bodies + 1] = line
      end
      i = i + 1
    end
  end
  next_body = 1
  ok = 0
  bad = 0
  exhausted = 0
  headers = { ["Content-Type"] = "application/json" }
end

function request()
  local body = bodies[next_body]
  if body == nil then
    exhausted = exhausted + 1
    wrk.thread:stop()
    return wrk.format("GET", "/health/live")
  end
  next_body = next_body + 1
  return wrk.format("POST", "/api/v1/actions/verify", headers, body)
end

function response(status, hdrs, body)
  if status == 200 and string.find(body, '"allowed":true', 1, true) then
    ok = ok + 1
  else
    bad = bad + 1
    if bad <= 3 then
      io.stderr:write("unexpected answer " .. status .. ": " .. string.sub(body, 1, 300) .. "\n")
    end
  end
end

function done(summary, latency, requests)
  local oks, bads, sent, deepest = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    oks = oks + t:get("ok")
    bads = bads + t:get("bad")
    local used = t:get("next_body") - 1
    sent = sent + used
    deepest = math.max(deepest, used)
  end
  -- Lines of the file this run may have spent (threads take every n-th line, so the
  -- busiest thread decides): the next run's SKIP.
  local spent = deepest * #threads
  local secs = summary.duration / 1e6
  local out = string.format(
    '{"duration_s":%.3f,"requests":%d,"lines_spent":%d,"allowed":%d,"errors":%d,"socket_errors":%d,'
      .. '"timeouts":%d,"rate":%.1f,"p50_ms":%.3f,"p90_ms":%.3f,"p95_ms":%.3f,'
      .. '"p99_ms":%.3f,"p999_ms":%.3f,"max_ms":%.3f,"mean_ms":%.3f}',
    secs, sent, spent, oks, bads,
    summary.errors.connect + summary.errors.read + summary.errors.write,
    summary.errors.timeout, oks / secs,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000, latency.max / 1000, latency.mean / 1000)
  io.write(out .. "\n")
  local path = os.getenv("WRK_OUT")
  if path ~= nil and path ~= "" then
    local f = assert(io.open(path, "w"))
    f:write(out .. "\n")
    f:close()
  end
end
