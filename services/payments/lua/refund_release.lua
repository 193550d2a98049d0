-- refund_release.lua: a refund that failed gives its reserved amount back to the intent, once.
-- KEYS: 1 pay:{S}:<intent>, 2 payref:{S}:<refund_no>. 1 released now, 0 not (already, or the
-- refund did not fail).
local f = redis.call('HMGET', KEYS[2], 'state', 'released', 'amount')
if f[1] ~= 'failed' or f[2] == '1' then
  return 0
end
redis.call('HINCRBY', KEYS[1], 'refunded', -tonumber(f[3]))
redis.call('HSET', KEYS[2], 'released', '1')
return 1
