-- svc_create.lua: open a stored-value card once (payments; docs/data.md "svc:{<card>}").
-- KEYS: 1 svc:{<card>}, 2 svc:{<card>}:ops, 3 svc:{<card>}:log (one card's hash tag).
-- ARGV: 1 holder, 2 daily_limit, 3 meal_limit, 4 offline_cap (fen, 0 none), 5 now ms,
--       6 who asks, 7 log length kept.
-- {'exists'} when the card is there already (nothing changes), else {'created'}.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'exists'}
end
redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'balance', '0', 'status', 'active',
           'reason', '', 'daily_limit', ARGV[2], 'meal_limit', ARGV[3], 'offline_cap', ARGV[4],
           'created_ms', ARGV[5], 'updated_ms', ARGV[5], 'version', '1', 'listed', '1')
redis.call('LPUSH', KEYS[3], '- created 0 0 - ' .. ARGV[5] .. ' create ' .. ARGV[6])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[7]) - 1)
return {'created'}
