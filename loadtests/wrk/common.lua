-- Shared by the scenario scripts: POST set-up, per-request bodies that never repeat (so a
-- response cache cannot answer them), and the one summary line the harness parses.
local M = {}

function M.post(path)
  wrk.method = "POST"
  wrk.path = path
  wrk.headers["Content-Type"] = "application/json"
end

-- A request function whose body is `prefix .. n .. suffix`, n counting up per connection
-- thread, so every request is distinct.
function M.varying(prefix, suffix)
  local n = 0
  -- LuaJIT's math.random is unseeded, so this is the same in every run: the harness passes a
  -- salt of its own per run (`wrk ... url -- SALT`), else a later run against the same server
  -- would repeat an earlier run's bodies and a response cache could answer them.
  local salt = tostring(math.random(1, 1000000000))
  init = function(args)
    if args[1] then
      salt = args[1]
    end
  end
  return function()
    n = n + 1
    return wrk.format(nil, nil, nil, prefix .. salt .. "-" .. n .. suffix)
  end
end

function M.done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'SPENDGATE_WRK {"requests": %d, "duration_us": %d, "bytes": %d, "connect_errors": %d, '
      .. '"read_errors": %d, "write_errors": %d, "status_errors": %d, "timeouts": %d, '
      .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end

return M
