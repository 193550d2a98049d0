-- Close the business day (Z): switch to the next day if the day is still the one the caller
-- read, and return the last stream id at the switch (every sale of the closed day is at or
-- before it). The close is recorded under the request id in the same hash, so the same request
-- retried answers the first close instead of closing the next day too.
-- KEYS: 1 business day, 2 sales stream, 3 day-close hash (day -> upto, req:<id> -> close).
-- ARGV: 1 expected current day, 2 next day, 3 request id.
-- Returns {'ok', upto, closed day, next day} or {'retry', current day}.
local memo = 'req:' .. ARGV[3]
local done = redis.call('HGET', KEYS[3], memo)
if done then
  local day, upto, nxt = string.match(done, '^(%S+) (%S+) (%S+)$')
  return {'ok', upto, day, nxt}
end
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then
  return {'retry', cur or ''}
end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local upto = '0-0'
if last[1] then upto = last[1][1] end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[1], upto, memo, ARGV[1] .. ' ' .. upto .. ' ' .. ARGV[2])
return {'ok', upto, ARGV[1], ARGV[2]}
