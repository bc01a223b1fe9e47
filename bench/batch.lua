-- One POST /v1/transactions/batch of BATCH transfers per request.
local threads = {}
local counter = 0
local accounts = tonumber(os.getenv("ACCOUNTS") or "1000")
local size = tonumber(os.getenv("BATCH") or "1000")

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(tid * 104729 + 3)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  -- MINIMAL=1: per-item status only (Prefer: return=minimal).
  if os.getenv("MINIMAL") then wrk.headers["Prefer"] = "return=minimal" end
end

function request()
  counter = counter + 1
  local items = {}
  for k = 1, size do
    local from = math.random(0, accounts - 1)
    local to = (from + math.random(1, accounts - 1)) % accounts
    items[k] = string.format('{"id":"b%d-%d-%d-%d","ops":[{"type":"transfer","from":"acct:%d","to":"acct:%d","amount":1}]}',
      tid, counter, k, os.time(), from, to)
  end
  return wrk.format(nil, "/v1/transactions/batch", nil, '{"transactions":[' .. table.concat(items, ",") .. ']}')
end
