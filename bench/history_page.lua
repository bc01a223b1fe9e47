-- wrk: GET one account's history page (100 entries) or its balance at a
-- random past instant, over ACCOUNTS accounts named bench:N.
-- PATHS=history or PATHS=balance; FROM_MS and TO_MS bound the instants.
local accounts = tonumber(os.getenv("ACCOUNTS") or "100000")
local kind = os.getenv("PATHS") or "history"
local from_ms = tonumber(os.getenv("FROM_MS") or "0")
local to_ms = tonumber(os.getenv("TO_MS") or "0")
math.randomseed(os.time())

request = function()
  local account = math.random(0, accounts - 1)
  if kind == "balance" then
    local at = math.random(from_ms, to_ms)
    return wrk.format("GET", "/v1/accounts/bench:" .. account .. "/balance?at=" .. at)
  end
  return wrk.format("GET", "/v1/accounts/bench:" .. account .. "/history?limit=100")
end

done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %.2f %.2f\n", summary.requests, summary.errors.status,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
