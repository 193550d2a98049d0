-- svc_refund.lua: give part or all of one deduction back to its card, once per refund number
-- (payments: card.refund, a return refunded to the stored-value tender it was paid with).
-- KEYS: 1 svc:{<card>}, 2 svc:{<card>}:ops, 3 svc:{<card>}:log, 4 svc:{<card>}:spent.
-- ARGV: 1 the deduction's op key ("d:<sale_id>:<attempt>"), 2 the refund's op key
--       ("r:<refund_no>"), 3 amount (fen > 0), 4 now ms, 5 register, 6 log length kept.
-- {'none'} no such card; {'not_found'} no such deduction recorded (or forgotten with the log);
-- {'not_paid', outcome} the deduction took nothing; {'conflict', result} this refund number
-- was used with another deduction or amount; {'too_much', left} more than the deduction has
-- left to give back; {'dup', result} or {'new', result}: result "<amount> <balance> <ms>
-- <deduction op> <register>". The deduction's refunds sum in its ops field "rf:<op>".
-- What is given back no longer counts against the limits: the amount comes off the day's and
-- the meal's spending the deduction was counted in (the fields its result names, as
-- svc_deduct.lua writes them; never below zero, a field dropped with its day stays dropped),
-- so refunds and a void together give back at most what the deduction added.
local prior = redis.call('HGET', KEYS[2], ARGV[2])
if prior then
  local amount, op = string.match(prior, '^(%S+) %S+ %S+ (%S+)')
  if amount ~= ARGV[3] or op ~= ARGV[1] then
    return {'conflict', prior}
  end
  return {'dup', prior}
end
local f = redis.call('HMGET', KEYS[1], 'status', 'balance', 'version')
if not f[1] then
  return {'none'}
end
local d = redis.call('HGET', KEYS[2], ARGV[1])
if not d then
  return {'not_found'}
end
local outcome, taken = string.match(d, '^(%S+) (%S+)')
if outcome ~= 'ok' then
  return {'not_paid', outcome}
end
local refunded = tonumber(redis.call('HGET', KEYS[2], 'rf:' .. ARGV[1]) or '0')
local amount = tonumber(ARGV[3])
if refunded + amount > tonumber(taken) then
  return {'too_much', string.format('%d', tonumber(taken) - refunded)}
end
local after = redis.call('HINCRBY', KEYS[1], 'balance', amount)
redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'updated_ms', ARGV[4])
redis.call('HINCRBY', KEYS[2], 'rf:' .. ARGV[1], amount)
local day, meal = string.match(d, '^%S+ %S+ %S+ %S+ %S+ %S+ %S+ (%S+) (%S+)')
for _, field in ipairs({day or '-', meal or '-'}) do
  local spent = field ~= '-' and tonumber(redis.call('HGET', KEYS[4], field) or '') or nil
  if spent then
    redis.call('HSET', KEYS[4], field, string.format('%d', math.max(0, spent - amount)))
  end
end
local result = ARGV[3] .. ' ' .. string.format('%d', after) .. ' ' .. ARGV[4] .. ' ' .. ARGV[1] ..
               ' ' .. ARGV[5]
redis.call('HSET', KEYS[2], ARGV[2], result)
redis.call('LPUSH', KEYS[3], ARGV[2] .. ' ' .. result)
while redis.call('LLEN', KEYS[3]) > tonumber(ARGV[6]) do
  local op, res = string.match(redis.call('RPOP', KEYS[3]), '^(%S+) (.*)$')
  if op and redis.call('HGET', KEYS[2], op) == res then
    redis.call('HDEL', KEYS[2], op, 'rf:' .. op)
  end
end
return {'new', result}
