-- Take a parked ticket out, atomically: only one register can recall it.
-- KEYS: 1 parked hash. ARGV: 1 park id. Returns the ticket payload or nil.
local t = redis.call('HGET', KEYS[1], ARGV[1])
if t then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return t
