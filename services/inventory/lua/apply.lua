-- Apply a batch of committed sales to their stores' stock, each sale once (a marker on the sale's
-- own hash, set in the same atomic step). Every line moves stock by -qty (returns have negative
-- qty, so they add back) and is recorded in the SKU's movement history with its running balance;
-- the stock itself and the daily sold quantities are written once per SKU per batch.
--
-- Redis does not roll back a script that fails midway, so the script runs in two passes: the
-- first only reads and checks every sale (quantities are whole numbers within the bound, no
-- balance or daily total leaves the range where Lua numbers are exact integers); the second
-- writes, and only for the sales the first pass accepted. A refused sale leaves no trace and
-- does not hold back the others. All keys are built by the caller (bus/keys.h).
--
-- ARGV: 1 number of sales, 2 time (ms), 3 max |qty| of a line, 4 max |balance| of a SKU,
--   5 the catalog item field that holds the low-stock threshold, then per sale: 1 marker hash (the sale's own hash), 2 sale id, 3 store, 4 stock hash of the
--   store, 5 business day, 6 number of lines L, then L x 6: sku, qty, kind (sale or return),
--   movement stream of the SKU, sold-per-day hash of the SKU, catalog item hash of the SKU
-- Returns {refused, low}: refused = {index, reason, ...} with 0-based indexes of the refused
--   sales; low = {store, sku, balance, threshold, ...} for SKUs that fell below their threshold.
local n, ts = tonumber(ARGV[1]), ARGV[2]
local qty_max, bal_max, threshold_field = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
if not n or not qty_max or not bal_max then
  return redis.error_reply('apply: malformed arguments')
end

local function whole(x, max)
  return x ~= nil and x == math.floor(x) and x >= -max and x <= max
end

-- pass 1: read and check; nothing is written
local skus, order, sold, seen = {}, {}, {}, {}
local accepted, refused = {}, {}
local p = 6
for i = 0, n - 1 do
  local s = {marker = ARGV[p], id = ARGV[p + 1], store = ARGV[p + 2], stock = ARGV[p + 3],
             day = ARGV[p + 4], nl = tonumber(ARGV[p + 5]), base = p + 6}
  if not s.nl or not s.day then
    return redis.error_reply('apply: malformed arguments at sale ' .. i)
  end
  p = s.base + s.nl * 6
  if not seen[s.marker] and redis.call('HEXISTS', s.marker, 'inventory') == 0 then
    local bal, day_sold, why = {}, {}, nil
    for j = 0, s.nl - 1 do
      local b = s.base + j * 6
      local sku, q, kind = ARGV[b], tonumber(ARGV[b + 1]), ARGV[b + 2]
      local k = s.stock .. '\0' .. sku
      if sku == nil or sku == '' or (kind ~= 'sale' and kind ~= 'return') then
        why = 'line ' .. (j + 1) .. ': no sku or kind'
      elseif not whole(q, qty_max) or q == 0 then
        why = 'line ' .. (j + 1) .. ': qty ' .. ARGV[b + 1] .. ' is not a whole number within +-' ..
              ARGV[3]
      else
        local cur = bal[k]
        if cur == nil then
          cur = skus[k] and skus[k].bal
        end
        if cur == nil then
          cur = tonumber(redis.call('HGET', s.stock, sku) or '0')
        end
        local sk = ARGV[b + 4]
        local d = (day_sold[sk] or (sold[sk] and sold[sk][s.day]) or 0) + q
        if not whole(cur, bal_max) or not whole(cur - q, bal_max) or not whole(d, bal_max) then
          why = 'line ' .. (j + 1) .. ': stock of ' .. sku .. ' would leave +-' .. ARGV[4]
        else
          bal[k] = cur - q
          day_sold[sk] = d
        end
      end
      if why then break end
    end
    if why then
      refused[#refused + 1] = i
      refused[#refused + 1] = why
    else
      seen[s.marker] = true
      accepted[#accepted + 1] = s
      -- what this sale did becomes the starting point of the next ones
      for j = 0, s.nl - 1 do
        local b = s.base + j * 6
        local k = s.stock .. '\0' .. ARGV[b]
        if not skus[k] then
          local before = tonumber(redis.call('HGET', s.stock, ARGV[b]) or '0')
          skus[k] = {key = s.stock, store = s.store, sku = ARGV[b], item = ARGV[b + 5],
                     before = before, bal = before, run = before}
          order[#order + 1] = skus[k]
        end
        skus[k].bal = bal[k]
      end
      for sk, d in pairs(day_sold) do
        sold[sk] = sold[sk] or {}
        sold[sk][s.day] = d
      end
    end
  end
end

-- pass 2: write what pass 1 accepted
for _, s in ipairs(accepted) do
  redis.call('HSET', s.marker, 'inventory', 1)
  for j = 0, s.nl - 1 do
    local b = s.base + j * 6
    local t = skus[s.stock .. '\0' .. ARGV[b]]
    local q = tonumber(ARGV[b + 1])
    t.run = t.run - q
    redis.call('XADD', ARGV[b + 3], '*', 'kind', ARGV[b + 2], 'delta', -q, 'balance', t.run,
               'reason', '', 'ref', s.id, 'ts', ts)
  end
end
local low = {}
for _, t in ipairs(order) do
  if t.bal ~= t.before then
    redis.call('HINCRBY', t.key, t.sku, t.bal - t.before)
  end
  local threshold = tonumber(redis.call('HGET', t.item, threshold_field) or '0') or 0
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
return {refused, low}
