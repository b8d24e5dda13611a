-- wrk script of the bench (bench/run.sh copies it to the machines that send the load).
--
--   wrk ... -s bench.lua URL                   GET URL, the same request every time
--   wrk ... -s bench.lua URL -- COOKIES_FILE   GET URL with a session cookie: one value a
--                                              line in COOKIES_FILE, taken in turn
--   wrk ... -s bench.lua URL -- '' THINK_MS PER_THREAD
--                                              each connection sends its first request at
--                                              once, then waits about THINK_MS (0.5 to 1.5
--                                              times, at random) after each answer, the way
--                                              a user reads a page: the load is connections
--                                              / think time requests a second, not as many
--                                              as the stack can answer (wrk's closed loop,
--                                              THINK_MS 0). PER_THREAD is the connections of
--                                              one wrk thread.
--
-- At the end it prints one line `BENCH_JSON {...}`: wrk's summary, its error counts and the
-- latency percentiles in microseconds, for bench/report.py. wrk's own text output above it
-- is for people. No `response` function: wrk then does not parse the answers' headers and
-- bodies, so the script costs the load generator next to nothing.

local prepared = {}
local turn = 0
local think_ms = 0
local undelayed = 0

function init(args)
  think_ms = tonumber(args[2] or "") or 0
  -- wrk asks delay() before every request, the first of a connection too; a connection that
  -- sends nothing for longer than nginx's client_header_timeout is closed. The first
  -- PER_THREAD calls are taken as the connections' first requests (wrk opens them all at its
  -- start; delay() has no connection to ask). Approximate: a fast connection's second
  -- request may come before a slow one's first, and a reconnect after an error is paced.
  undelayed = tonumber(args[3] or "") or 0
  -- One seed per wrk thread (each has its own Lua state), so the threads do not think alike.
  math.randomseed(os.time() + (tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000))
  local path = args[1]
  if path == nil or path == "" then
    prepared = { wrk.format() }
    return
  end
  for line in io.lines(path) do
    if line ~= "" then
      table.insert(prepared, wrk.format(nil, nil, { Cookie = "webstack_session=" .. line }))
    end
  end
  if #prepared == 0 then
    error("no session cookie in " .. path)
  end
end

function request()
  turn = turn % #prepared + 1
  return prepared[turn]
end

function delay()
  if think_ms <= 0 then
    return 0
  end
  if undelayed > 0 then
    undelayed = undelayed - 1
    return 0
  end
  return math.floor(think_ms * (0.5 + math.random()))
end

local function integer(value)
  return string.format("%.0f", value)
end

function done(summary, latency, requests)
  local errors = summary.errors
  local fields = {
    '"duration_us":' .. integer(summary.duration),
    '"requests":' .. integer(summary.requests),
    '"bytes":' .. integer(summary.bytes),
    '"errors":{"connect":' .. integer(errors.connect)
      .. ',"read":' .. integer(errors.read)
      .. ',"write":' .. integer(errors.write)
      .. ',"status":' .. integer(errors.status)
      .. ',"timeout":' .. integer(errors.timeout) .. "}",
    '"latency_us":{"min":' .. integer(latency.min)
      .. ',"max":' .. integer(latency.max)
      .. ',"mean":' .. integer(latency.mean)
      .. ',"stdev":' .. integer(latency.stdev)
      .. ',"p50":' .. integer(latency:percentile(50))
      .. ',"p75":' .. integer(latency:percentile(75))
      .. ',"p90":' .. integer(latency:percentile(90))
      .. ',"p99":' .. integer(latency:percentile(99))
      .. ',"p99.9":' .. integer(latency:percentile(99.9)) .. "}",
  }
  io.write("BENCH_JSON {" .. table.concat(fields, ",") .. "}\n")
end
