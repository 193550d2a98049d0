-- Park a ticket under its park id, unless that park id was recalled already (a resent park
-- arriving after the recall must not bring the ticket back).
-- KEYS: 1 parked hash. ARGV: 1 park id, 2 entry. Returns 1 parked, 0 recalled already.
if redis.call('HEXISTS', KEYS[1], '~' .. ARGV[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
