-- Apply a batch of committed sales to their stores' stock, each sale once (a marker on the sale's
-- own hash, set in the same atomic step). Every line moves stock by -qty (returns have negative
-- qty, so they add back) and is recorded in the SKU's movement history with its running balance;
-- the stock itself and the daily sold quantities are written once per SKU per batch.
--
-- Redis does not roll back a script that fails midway, so the script runs in two passes: the
-- first only reads and checks every sale (quantities are whole numbers within the bound, every
-- stored balance is an integer, no balance or daily total leaves the range where Lua numbers
-- are exact integers); the second writes, and only for the sales the first pass accepted. A
-- refused sale leaves no trace and does not hold back the others. Everything the second pass
-- reads was read by the first, so a key of the wrong type fails the script before its first
-- write. All keys are built by the caller (bus/keys.h), once per store and SKU of the batch:
-- lines name their SKU by its place in that list.
--
-- ARGV: 1 number of sales, 2 time (ms), 3 max |qty| of a line, 4 max |balance| of a SKU,
--   5 the catalog item field that holds the low-stock threshold, 6 number of SKUs E, then E x 6
--   (each store and SKU the batch moves, once): store, stock hash of the store, sku, movement
--   stream of the SKU, sold-per-day hash of the SKU, catalog item hash of the SKU; then per
--   sale: 1 marker hash (the sale's own hash), 2 sale id, 3 business day, 4 number of lines L,
--   then L x 3: SKU (1-based place in the list above), qty, kind (sale or return)
-- Returns {refused, low}: refused = {index, reason, ...} with 0-based indexes of the refused
--   sales; low = {store, sku, balance, threshold, ...} for SKUs that fell below their threshold.
local A = ARGV
local call = redis.call
local n, ts = tonumber(A[1]), A[2]
local qty_max, bal_max, threshold_field = tonumber(A[3]), tonumber(A[4]), A[5]
local ne = tonumber(A[6])
if not n or not qty_max or not bal_max or not ne then
  return redis.error_reply('apply: malformed arguments')
end

local function whole(x, max)
  return x ~= nil and x == math.floor(x) and x >= -max and x <= max
end

-- A stored balance: an integer string as a number, 0 when absent, nil for anything else (a
-- value HINCRBY would refuse must be refused before the first write, not by HINCRBY).
local function stored(s)
  if s == false or s == nil then return 0 end
  if #s > 17 or not string.find(s, '^%-?%d+$') then return nil end
  return tonumber(s)
end

local skus = {}
local p = 7
for e = 1, ne do
  if not A[p + 5] or A[p + 2] == '' then
    return redis.error_reply('apply: malformed arguments at SKU ' .. e)
  end
  skus[e] = {store = A[p], stock = A[p + 1], sku = A[p + 2], moves = A[p + 3], sold = A[p + 4],
             item = A[p + 5], days = {}}
  p = p + 6
end

-- pass 1: read and check; nothing is written
local order, accepted, refused, seen = {}, {}, {}, {}
for i = 0, n - 1 do
  local marker, id, day, nl = A[p], A[p + 1], A[p + 2], tonumber(A[p + 3])
  if not nl or not day then
    return redis.error_reply('apply: malformed arguments at sale ' .. i)
  end
  local base = p + 4
  p = base + nl * 3
  if not seen[marker] and call('HEXISTS', marker, 'inventory') == 0 then
    local bal, day_sold, why = {}, {}, nil -- what this sale did so far, per SKU
    for j = 0, nl - 1 do
      local b = base + j * 3
      local t, q, kind = skus[tonumber(A[b])], tonumber(A[b + 1]), A[b + 2]
      if not t or (kind ~= 'sale' and kind ~= 'return') then
        why = 'line ' .. (j + 1) .. ': no sku or kind'
      elseif not whole(q, qty_max) or q == 0 then
        why = 'line ' .. (j + 1) .. ': qty ' .. A[b + 1] .. ' is not a whole number within +-' ..
              A[3]
      else
        if not t.read then
          t.before = stored(call('HGET', t.stock, t.sku))
          t.bal, t.run, t.read = t.before, t.before, true
          t.threshold = tonumber(call('HGET', t.item, threshold_field) or '0') or 0
        end
        local cur = bal[t] or t.bal
        local d = (day_sold[t] or t.days[day] or 0) + q
        if not whole(cur, bal_max) or not whole(cur - q, bal_max) or not whole(d, bal_max) then
          why = 'line ' .. (j + 1) .. ': stock of ' .. t.sku .. ' would leave +-' .. A[4]
        else
          bal[t] = cur - q
          day_sold[t] = d
        end
      end
      if why then break end
    end
    if why then
      refused[#refused + 1] = i
      refused[#refused + 1] = why
    else
      seen[marker] = true
      accepted[#accepted + 1] = {marker = marker, id = id, base = base, nl = nl}
      -- what this sale did becomes the starting point of the next ones
      for j = 0, nl - 1 do
        local t = skus[tonumber(A[base + j * 3])]
        if not t.moved then
          t.moved = true
          order[#order + 1] = t
        end
      end
      for t, b in pairs(bal) do t.bal = b end
      for t, d in pairs(day_sold) do t.days[day] = d end
    end
  end
end

-- pass 2: write what pass 1 accepted
for _, s in ipairs(accepted) do
  call('HSET', s.marker, 'inventory', 1)
  for j = 0, s.nl - 1 do
    local b = s.base + j * 3
    local t, q = skus[tonumber(A[b])], tonumber(A[b + 1])
    t.run = t.run - q
    call('XADD', t.moves, '*', 'kind', A[b + 2], 'delta', -q, 'balance', t.run, 'reason', '',
         'ref', s.id, 'ts', ts)
  end
end
local low = {}
for _, t in ipairs(order) do
  if t.bal ~= t.before then
    call('HINCRBY', t.stock, t.sku, t.bal - t.before)
  end
  if t.threshold > 0 and t.before >= t.threshold and t.bal < t.threshold then
    low[#low + 1] = t.store
    low[#low + 1] = t.sku
    low[#low + 1] = t.bal
    low[#low + 1] = t.threshold
  end
  for day, q in pairs(t.days) do
    call('HINCRBY', t.sold, day, q)
  end
end
return {refused, low}
