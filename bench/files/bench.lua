-- wrk script of the bench (bench/run.sh copies it to the machines that send the load).
--
--   wrk ... -s bench.lua URL                   GET URL, the same request every time
--   wrk ... -s bench.lua URL -- COOKIES_FILE   GET URL with a session cookie: one value a
--                                              line in COOKIES_FILE, taken in turn
--
-- At the end it prints one line `BENCH_JSON {...}`: wrk's summary, its error counts and the
-- latency percentiles in microseconds, for bench/report.py. wrk's own text output above it
-- is for people. No `response` function: wrk then does not parse the answers' headers and
-- bodies, so the script costs the load generator next to nothing.

local prepared = {}
local turn = 0

function init(args)
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
