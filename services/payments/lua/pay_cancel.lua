-- pay_cancel.lua: the register gives a payment up (payments): it is reversed, whatever it
-- came to. KEYS: 1 pay:{S}:<intent>, 2 paydue:{S}, 3 payhist:{S}:<intent>.
-- ARGV: 1 intent, 2 now ms, 3 register asking.
-- {'none'} no such intent, {'other'} another register's, {state} otherwise: failed and
-- reversed stay as they are (nothing charged); a succeeded one goes back to 'reversing'; any
-- other is marked cancel and made due now (a worker reverses it; one not yet sent is never
-- sent).
local f = redis.call('HMGET', KEYS[1], 'state', 'register')
if not f[1] then
  return {'none'}
end
if ARGV[3] ~= '' and f[2] ~= ARGV[3] then
  return {'other'}
end
if f[1] == 'failed' or f[1] == 'reversed' or f[1] == 'refunded' then
  return {f[1]}
end
redis.call('HSET', KEYS[1], 'cancel', '1', 'due_ms', ARGV[2])
if f[1] == 'succeeded' then
  redis.call('HSET', KEYS[1], 'state', 'reversing', 'reason', 'cancelled after it was paid',
             'updated_ms', ARGV[2])
  redis.call('RPUSH', KEYS[3], ARGV[2] .. ' reversing cancelled after it was paid')
end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return {redis.call('HGET', KEYS[1], 'state')}
