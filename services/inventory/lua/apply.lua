-- Apply one committed sale to the store's stock, once (marker on the sale's own hash): each line
-- moves stock by -qty (returns have negative qty, so they add back), is recorded in the SKU's
-- movement history, and counts toward the SKU's daily sales for reorder suggestions.
-- KEYS: 1 sale hash, 2 stock hash. ARGV: 1 payload, 2 business day, 3 store, 4 time (ms)
-- Returns the SKUs that fell below their low-stock threshold: {sku, balance, threshold, ...}.
if redis.call('HSETNX', KEYS[1], 'inventory', 1) == 0 then
  return {}
end
local s = cmsgpack.unpack(ARGV[1])
local store, low = ARGV[3], {}
for _, l in ipairs(s.lines or {}) do
  if not l.voided then
    local before = tonumber(redis.call('HGET', KEYS[2], l.sku) or '0')
    local after = redis.call('HINCRBY', KEYS[2], l.sku, -l.qty)
    redis.call('XADD', 'moves:{' .. store .. '}:' .. l.sku, '*', 'kind',
               l.return_of and 'return' or 'sale', 'delta', -l.qty, 'balance', after,
               'reason', '', 'ref', s.sale_id, 'ts', ARGV[4])
    redis.call('HINCRBY', 'sold:{' .. store .. '}:' .. l.sku, ARGV[2], l.qty)
    local threshold = tonumber(redis.call('HGET', 'catalog:item:' .. l.sku, 'threshold') or '0')
    if threshold > 0 and before >= threshold and after < threshold then
      low[#low + 1] = l.sku
      low[#low + 1] = after
      low[#low + 1] = threshold
    end
  end
end
return low
