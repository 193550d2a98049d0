-- pay_create.lua: create a payment intent once (payments; docs/data.md "pay:{S}:<intent>").
-- KEYS: 1 pay:{S}:<intent>, 2 paydue:{S}, 3 payhist:{S}:<intent>, 4 payday:{S}:<day> (one
-- store's hash tag).
-- ARGV: 1 intent, 2 store, 3 register, 4 sale_id, 5 attempt, 6 provider, 7 amount (fen),
--       8 auth code, 9 its SHA-256 (hex), 10 now ms, 11 deadline ms (reverse after),
--       12 TTL s of the day index (0: forever; the retention and two days, so that the index
--       outlives the intents it lists).
-- The same intent asked again with the same sale, amount and code is the same payment:
-- {'exists'}; with anything different it is refused ({'conflict'}), never charged again.
local k = KEYS[1]
if redis.call('EXISTS', k) == 1 then
  local f = redis.call('HMGET', k, 'sale_id', 'amount', 'code_hash', 'register')
  if f[1] ~= ARGV[4] or f[2] ~= ARGV[7] or f[3] ~= ARGV[9] or f[4] ~= ARGV[3] then
    return {'conflict'}
  end
  return {'exists'}
end
redis.call('HSET', k, 'store', ARGV[2], 'register', ARGV[3], 'sale_id', ARGV[4],
           'attempt', ARGV[5], 'provider', ARGV[6], 'amount', ARGV[7], 'code', ARGV[8],
           'code_hash', ARGV[9], 'state', 'created', 'reason', 'created', 'created_ms', ARGV[10],
           'updated_ms', ARGV[10], 'sent', '0', 'cancel', '0', 'deadline_ms', ARGV[11],
           'due_ms', ARGV[10], 'owner', '', 'lease_until', '0', 'steps', '0',
           'transaction_id', '')
redis.call('ZADD', KEYS[2], ARGV[10], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[10], ARGV[1])
if tonumber(ARGV[12]) > 0 then
  redis.call('EXPIRE', KEYS[4], ARGV[12])
end
redis.call('RPUSH', KEYS[3], ARGV[10] .. ' created ' .. ARGV[6])
return {'created'}
