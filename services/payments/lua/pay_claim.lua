-- pay_claim.lua: take a due intent for one step (payments).
-- KEYS: 1 pay:{S}:<intent>, 2 paydue:{S}. ARGV: 1 owner, 2 now ms, 3 lease ms, 4 intent.
-- Nil when it is final (and dropped from the due set), not due yet, or leased by another
-- worker whose lease has not run out; else the whole hash, leased to owner until now + lease.
-- While leased its due time is the lease's end: a worker that dies leaves it to the others.
local f = redis.call('HMGET', KEYS[1], 'state', 'owner', 'lease_until', 'due_ms')
local state = f[1]
if not state or state == 'succeeded' or state == 'failed' or state == 'reversed' or
   state == 'refunded' or state == 'manual' then
  redis.call('ZREM', KEYS[2], ARGV[4])
  return false
end
local now = tonumber(ARGV[2])
if f[2] ~= '' and f[2] ~= ARGV[1] and tonumber(f[3]) > now then
  return false
end
if tonumber(f[4]) > now then
  return false
end
local lease = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'lease_until', lease)
redis.call('ZADD', KEYS[2], lease, ARGV[4])
return redis.call('HGETALL', KEYS[1])
