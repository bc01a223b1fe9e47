-- An atomic, idempotent transfer as the seed systems wrote it in Redis:
-- KEYS[1] from, KEYS[2] to, KEYS[3] idempotency key; ARGV[1] amount.
if redis.call('SET', KEYS[3], '1', 'NX', 'EX', 86400) == false then
  return 'duplicate'
end
local amount = tonumber(ARGV[1])
local balance = tonumber(redis.call('GET', KEYS[1]) or '0')
if balance < amount then
  return 'insufficient_funds'
end
redis.call('DECRBY', KEYS[1], amount)
redis.call('INCRBY', KEYS[2], amount)
return 'ok'
