-- One stock movement, once: the movement id is claimed in the same atomic step as the change, so
-- a resent request is answered with the balance and changes nothing. Everything is checked before
-- the first write (Redis does not roll back a script that fails midway): a refused movement
-- leaves no trace, not even its claimed id, so a corrected request with the same id still runs.
-- KEYS: 1 stock hash of the store, 2 movement history stream of the SKU, 3 movement id key
-- ARGV: 1 sku, 2 kind (receive, adjust, count, transfer_out, transfer_in), 3 quantity (a delta,
--       or for count the counted quantity), 4 reason, 5 reference, 6 time (ms), 7 low-stock
--       threshold (0 = none), 8 id retention seconds, 9 max |quantity|, 10 max |balance|
-- Returns {'ok', balance, delta, low (0/1)}, {'dup', balance, 0, 0} for an id already used, or
--   {'bad', reason} with nothing written.
local function whole(x, max)
  return x ~= nil and x == math.floor(x) and x >= -max and x <= max
end

local qty_max, bal_max = tonumber(ARGV[9]), tonumber(ARGV[10])
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {'dup', tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0'), 0, 0}
end
local before = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local delta = tonumber(ARGV[3])
if not qty_max or not bal_max or not whole(delta, qty_max) then
  return {'bad', 'quantity ' .. ARGV[3] .. ' is not a whole number within +-' .. (ARGV[9] or '?')}
end
if ARGV[2] == 'count' then
  delta = delta - (before or 0)
end
if not whole(before, bal_max) or not whole(before + delta, bal_max) then
  return {'bad', 'the stock of ' .. ARGV[1] .. ' would leave +-' .. ARGV[10]}
end
redis.call('SET', KEYS[3], 1, 'EX', tonumber(ARGV[8]))
local after = redis.call('HINCRBY', KEYS[1], ARGV[1], delta)
redis.call('XADD', KEYS[2], '*', 'kind', ARGV[2], 'delta', delta, 'balance', after,
           'reason', ARGV[4], 'ref', ARGV[5], 'ts', ARGV[6])
local threshold = tonumber(ARGV[7]) or 0
local low = 0
if threshold > 0 and before >= threshold and after < threshold then low = 1 end
return {'ok', after, delta, low}
