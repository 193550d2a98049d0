-- refund_create.lua: a refund of a paid intent, never more than was paid (payments).
-- KEYS: 1 pay:{S}:<intent>, 2 payref:{S}:<refund_no>, 3 paydue:{S},
--       4 payhist:{S}:R:<refund_no>, 5 payhist:{S}:<intent> (one store's hash tag).
-- ARGV: 1 refund_no, 2 intent, 3 amount (fen), 4 now ms, 5 reason.
-- {'created'}, {'exists'} (the same refund asked again), {'conflict'} (that refund number was
-- used for another intent or amount), {'none'} no such intent, {'not_paid', state},
-- {'too_much', what may still be refunded}. The amount is reserved on the intent (refunded)
-- in the same step, so two refunds at once can never together pass what was paid; a refund
-- that fails gives it back in the script that records its end (pay_move.lua). While a refund is open the paid intent is
-- not over: its keys lose their retention EXPIRE until the last open refund ends
-- (pay_move.lua).
local r = redis.call('HMGET', KEYS[2], 'intent', 'amount')
if r[1] then
  if r[1] ~= ARGV[2] or r[2] ~= ARGV[3] then
    return {'conflict'}
  end
  return {'exists'}
end
local p = redis.call('HMGET', KEYS[1], 'state', 'amount', 'refunded', 'provider', 'register',
                     'cancel')
if not p[1] then
  return {'none'}
end
if p[6] == '1' then
  return {'not_paid', 'cancelled'} -- being reversed: the reversal gives the money back
end
if p[1] == 'refunded' then
  return {'too_much', '0'} -- refunded in full already
end
if p[1] ~= 'succeeded' then
  return {'not_paid', p[1]}
end
local paid, refunded, amount = tonumber(p[2]), tonumber(p[3] or '0'), tonumber(ARGV[3])
if refunded + amount > paid then
  return {'too_much', tostring(paid - refunded)}
end
redis.call('HINCRBY', KEYS[1], 'refunded', amount)
redis.call('HINCRBY', KEYS[1], 'refunds_open', 1)
redis.call('PERSIST', KEYS[1])
redis.call('PERSIST', KEYS[5])
redis.call('HSET', KEYS[2], 'intent', ARGV[2], 'amount', ARGV[3], 'total', p[2],
           'provider', p[4], 'register', p[5], 'reason_given', ARGV[5], 'state', 'created',
           'reason', 'created', 'created_ms', ARGV[4], 'updated_ms', ARGV[4], 'sent', '0',
           'due_ms', ARGV[4], 'owner', '', 'lease_until', '0', 'steps', '0', 'refund_id', '',
           'released', '0')
redis.call('ZADD', KEYS[3], ARGV[4], 'R:' .. ARGV[1])
redis.call('RPUSH', KEYS[4], ARGV[4] .. ' created refund of ' .. ARGV[3] .. ' fen')
return {'created'}
