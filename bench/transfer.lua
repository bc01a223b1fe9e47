-- One durable transfer per request, each with a unique idempotency key,
-- between random accounts acct:0 … acct:(ACCOUNTS-1).
-- MINIMAL=1: answers with id, status and sequence only (Prefer: return=minimal).
local threads = {}
local counter = 0
local accounts = tonumber(os.getenv("ACCOUNTS") or "1000")

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(tid * 7919 + 17)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  if os.getenv("MINIMAL") then wrk.headers["Prefer"] = "return=minimal" end
end

function request()
  counter = counter + 1
  local from = math.random(0, accounts - 1)
  local to = (from + math.random(1, accounts - 1)) % accounts
  local body = string.format('{"id":"w%d-%d-%d","from":"acct:%d","to":"acct:%d","amount":1}',
    tid, counter, os.time(), from, to)
  return wrk.format(nil, "/v1/transfers", nil, body)
end

-- Every id is new, so every answer must be 201 committed (funded accounts).
-- Global, so that done() can read each thread's count.
wrong = 0
function response(status, headers, body)
  if status ~= 201 then wrong = wrong + 1 end
end

function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + thread:get("wrong") end
  io.write(string.format("wrong answers: %d\n", total))
end
