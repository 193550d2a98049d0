-- One stock movement, once: the movement id is claimed in the same atomic step as the change, so
-- a resent request is answered with the balance and changes nothing.
-- KEYS: 1 stock hash of the store, 2 movement history stream of the SKU, 3 movement id key
-- ARGV: 1 sku, 2 kind (receive, adjust, count, transfer_out, transfer_in), 3 quantity (a delta,
--       or for count the counted quantity), 4 reason, 5 reference, 6 time (ms), 7 low-stock
--       threshold (0 = none), 8 id retention seconds
if redis.call('SET', KEYS[3], 1, 'NX', 'EX', tonumber(ARGV[8])) == false then
  return {'dup', tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0'), 0, 0}
end
local before = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local delta = tonumber(ARGV[3])
if ARGV[2] == 'count' then
  delta = delta - before
end
local after = redis.call('HINCRBY', KEYS[1], ARGV[1], delta)
redis.call('XADD', KEYS[2], '*', 'kind', ARGV[2], 'delta', delta, 'balance', after,
           'reason', ARGV[4], 'ref', ARGV[5], 'ts', ARGV[6])
local threshold = tonumber(ARGV[7])
local low = 0
if threshold > 0 and before >= threshold and after < threshold then low = 1 end
return {'ok', after, delta, low}
