-- svc_topup.lua: add money to a card once per operation id (payments).
-- KEYS: 1 svc:{<card>}, 2 svc:{<card>}:ops, 3 svc:{<card>}:log.
-- ARGV: 1 op key ("t:<op_id>"), 2 amount (fen > 0), 3 now ms, 4 who asks, 5 log length kept
--       (the ops of entries trimmed from the log are forgotten with them), 6 highest balance.
-- {'none'} no such card; {'conflict', result} the op id was used for another amount;
-- {'dup', result} done already (nothing changes); {'limit', balance} it would pass the highest
-- balance (nothing changes); {'new', result}. result: "ok <amount> <balance> - <ms> topup <who>".
local prior = redis.call('HGET', KEYS[2], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'none'}
end
if prior then
  if string.match(prior, '^%S+ (%S+)') ~= ARGV[2] then
    return {'conflict', prior}
  end
  return {'dup', prior}
end
local balance = tonumber(redis.call('HGET', KEYS[1], 'balance'))
if balance + tonumber(ARGV[2]) > tonumber(ARGV[6]) then
  return {'limit', tostring(balance)}
end
local after = redis.call('HINCRBY', KEYS[1], 'balance', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'updated_ms', ARGV[3])
local result = 'ok ' .. ARGV[2] .. ' ' .. string.format('%d', after) .. ' - ' .. ARGV[3] ..
               ' topup ' .. ARGV[4]
redis.call('HSET', KEYS[2], ARGV[1], result)
redis.call('LPUSH', KEYS[3], ARGV[1] .. ' ' .. result)
while redis.call('LLEN', KEYS[3]) > tonumber(ARGV[5]) do
  local op, res = string.match(redis.call('RPOP', KEYS[3]), '^(%S+) (.*)$')
  if op and redis.call('HGET', KEYS[2], op) == res then
    redis.call('HDEL', KEYS[2], op)
  end
end
return {'new', result}
