-- pay_cancel.lua: the register gives a payment up (payments): it is reversed, whatever it
-- came to. KEYS: 1 pay:{S}:<intent>, 2 paydue:{S}, 3 payhist:{S}:<intent>.
-- ARGV: 1 intent, 2 now ms, 3 register asking, 4 sale id and 5 attempt (when the register
-- names the intent by them), 6 retention s (0: forever) of an intent written failed here.
-- A succeeded intent cancelled is not over any more: its keys lose their retention EXPIRE
-- (pay_move.lua gives it again when it ends).
-- {'none'} no such intent (named by its id), {'other'} another register's, {state} otherwise:
-- {'has_refunds'} one with refunds (partly, or 'refunded' in full: not reversed on top);
-- failed and reversed stay as they are (nothing charged); a succeeded one goes back to
-- 'reversing'; any other is marked cancel and made due now (a worker reverses it; one not yet
-- sent is never sent). An intent named by its sale and attempt that does not exist yet is
-- written as failed and cancelled: a payment.pay for it still on its way (a slow instance)
-- then finds it and is refused as a conflict, so it is never charged.
local f = redis.call('HMGET', KEYS[1], 'state', 'register')
if not f[1] and ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'store', '', 'register', ARGV[3], 'sale_id', ARGV[4],
             'attempt', ARGV[5], 'provider', '', 'amount', '0', 'code', '', 'code_hash', '',
             'state', 'failed', 'reason', 'cancelled before it arrived: nothing was charged',
             'created_ms', ARGV[2], 'updated_ms', ARGV[2], 'sent', '0', 'cancel', '1',
             'deadline_ms', ARGV[2], 'due_ms', '0', 'owner', '', 'lease_until', '0',
             'steps', '0', 'transaction_id', '')
  redis.call('RPUSH', KEYS[3], ARGV[2] .. ' failed cancelled before it arrived')
  if tonumber(ARGV[6]) > 0 then
    redis.call('EXPIRE', KEYS[1], ARGV[6])
    redis.call('EXPIRE', KEYS[3], ARGV[6])
  end
  return {'failed'}
end
if not f[1] then
  return {'none'}
end
if ARGV[3] ~= '' and f[2] ~= ARGV[3] then
  return {'other'}
end
if f[1] == 'failed' or f[1] == 'reversed' then
  return {f[1]}
end
if tonumber(redis.call('HGET', KEYS[1], 'refunded') or '0') > 0 then
  return {'has_refunds'} -- a payment partly refunded is not reversed (the providers refuse it)
end
redis.call('HSET', KEYS[1], 'cancel', '1', 'due_ms', ARGV[2])
if f[1] == 'succeeded' then
  redis.call('HSET', KEYS[1], 'state', 'reversing', 'reason', 'cancelled after it was paid',
             'updated_ms', ARGV[2])
  redis.call('RPUSH', KEYS[3], ARGV[2] .. ' reversing cancelled after it was paid')
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[3])
end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return {redis.call('HGET', KEYS[1], 'state')}
