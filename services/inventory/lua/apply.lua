-- Apply a batch of committed sales to their stores' stock, each sale once (marker on the sale's
-- own hash, set in the same atomic step). Every line moves stock by -qty (returns have negative
-- qty, so they add back) and is recorded in the SKU's movement history with its running balance;
-- the stock itself and the daily sold quantities are written once per SKU per batch.
-- ARGV: 1 n, 2 time (ms), then 4 per sale: sale hash key, payload, store, business day
-- Returns the SKUs that fell below their low-stock threshold: {store, sku, balance, threshold, ...}
local n, ts = tonumber(ARGV[1]), ARGV[2]
local skus, order, sold = {}, {}, {}
for i = 0, n - 1 do
  local b = 3 + i * 4
  local store, day = ARGV[b + 2], ARGV[b + 3]
  if redis.call('HSETNX', ARGV[b], 'inventory', 1) == 1 then
    local s = cmsgpack.unpack(ARGV[b + 1])
    for _, l in ipairs(s.lines or {}) do
      if not l.voided then
        local k = store .. '\0' .. l.sku
        local t = skus[k]
        if not t then
          local key = 'stock:{' .. store .. '}'
          local before = tonumber(redis.call('HGET', key, l.sku) or '0')
          t = {key = key, store = store, sku = l.sku, before = before, bal = before}
          skus[k] = t
          order[#order + 1] = t
        end
        t.bal = t.bal - l.qty
        redis.call('XADD', 'moves:{' .. store .. '}:' .. l.sku, '*', 'kind',
                   l.return_of and 'return' or 'sale', 'delta', -l.qty, 'balance', t.bal,
                   'reason', '', 'ref', s.sale_id, 'ts', ts)
        local sk = 'sold:{' .. store .. '}:' .. l.sku
        sold[sk] = sold[sk] or {}
        sold[sk][day] = (sold[sk][day] or 0) + l.qty
      end
    end
  end
end
local low = {}
for _, t in ipairs(order) do
  if t.bal ~= t.before then
    redis.call('HINCRBY', t.key, t.sku, t.bal - t.before)
  end
  local threshold = tonumber(redis.call('HGET', 'catalog:item:' .. t.sku, 'threshold') or '0')
  if threshold > 0 and t.before >= threshold and t.bal < threshold then
    low[#low + 1] = t.store
    low[#low + 1] = t.sku
    low[#low + 1] = t.bal
    low[#low + 1] = threshold
  end
end
for key, days in pairs(sold) do
  for day, q in pairs(days) do
    redis.call('HINCRBY', key, day, q)
  end
end
return low
