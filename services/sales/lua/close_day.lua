-- Close the business day (Z): switch to the next day if the day is still the one the caller
-- read, and return the last stream id at the switch (every sale of the closed day is at or
-- before it). KEYS: 1 business day, 2 sales stream, 3 day-close hash.
-- ARGV: 1 expected current day, 2 next day.
local cur = redis.call('GET', KEYS[1])
if cur ~= ARGV[1] then
  return {'retry', cur or ''}
end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local upto = '0-0'
if last[1] then upto = last[1][1] end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[1], upto)
return {'ok', upto}
