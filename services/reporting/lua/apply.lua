-- Add one committed sale to the store's day aggregates, once: the marker field on the sale's own
-- hash makes a second delivery (after a crash before XACK) a no-op, in the same atomic step.
-- KEYS: 1 sale hash, 2 day totals, 3 hours, 4 items, 5 categories, 6 registers, 7 cashiers,
--       8 tenders, 9 tax, 10 pairs, 11 days set
-- ARGV: 1 payload, 2 business day, 3 hour of the sale (local), 4 max distinct SKUs for pairs
if redis.call('HSETNX', KEYS[1], 'reporting', 1) == 0 then
  return 0
end
local s = cmsgpack.unpack(ARGV[1])
local T, reg, cashier = KEYS[2], s.register, s.cashier
redis.call('SADD', KEYS[11], ARGV[2])

local first = tonumber(redis.call('HGET', KEYS[6], reg .. ':first') or '0')
if first == 0 or s.seq < first then
  redis.call('HSET', KEYS[6], reg .. ':first', s.seq)
end
local last = tonumber(redis.call('HGET', KEYS[6], reg .. ':last') or '0')
if s.seq > last then
  redis.call('HSET', KEYS[6], reg .. ':last', s.seq)
end
redis.call('HINCRBY', KEYS[6], reg .. ':records', 1)

if s.kind == 'nosale' then
  redis.call('HINCRBY', T, 'nosale', 1)
  redis.call('HINCRBY', KEYS[6], reg .. ':nosale', 1)
  return 1
end

redis.call('HINCRBY', T, 'tickets', 1)
redis.call('HINCRBY', T, s.kind == 'return' and 'return_tickets' or 'sale_tickets', 1)
local skus, nskus = {}, 0
for _, l in ipairs(s.lines) do
  if l.voided then
    redis.call('HINCRBY', T, 'voided_lines', 1)
  else
    if l.return_of then
      redis.call('HINCRBY', T, 'returns', l.amount)
    else
      redis.call('HINCRBY', T, 'gross', l.gross)
      redis.call('HINCRBY', T, 'discounts', l.promo_discount + l.ticket_discount)
      if not skus[l.sku] and nskus < tonumber(ARGV[4]) then
        skus[l.sku] = true
        nskus = nskus + 1
      end
    end
    redis.call('HINCRBY', T, 'total', l.amount)
    redis.call('HINCRBY', KEYS[4], l.sku .. ':qty', l.qty)
    redis.call('HINCRBY', KEYS[4], l.sku .. ':amount', l.amount)
    redis.call('HINCRBY', KEYS[5], (l.category or '') .. ':amount', l.amount)
    redis.call('HINCRBY', KEYS[9], l.tax_rate_bp .. ':gross', l.amount)
    redis.call('HINCRBY', KEYS[9], l.tax_rate_bp .. ':tax', l.tax)
  end
end
for _, t in ipairs(s.tenders) do
  redis.call('HINCRBY', KEYS[8], t.kind, t.amount)
  redis.call('HINCRBY', KEYS[6], reg .. ':tender:' .. t.kind, t.amount)
end
local change, rounding = s.change or 0, s.cash_rounding or 0
redis.call('HINCRBY', T, 'change', change)
redis.call('HINCRBY', T, 'cash_rounding', rounding)
redis.call('HINCRBY', KEYS[6], reg .. ':change', change)
redis.call('HINCRBY', KEYS[6], reg .. ':tickets', 1)
redis.call('HINCRBY', KEYS[6], reg .. ':total', s.total)
redis.call('HINCRBY', KEYS[7], cashier .. ':tickets', 1)
redis.call('HINCRBY', KEYS[7], cashier .. ':total', s.total)
redis.call('HINCRBY', KEYS[3], ARGV[3], s.total)

local list = {}
for sku in pairs(skus) do list[#list + 1] = sku end
table.sort(list)
for i = 1, #list do
  for j = i + 1, #list do
    redis.call('HINCRBY', KEYS[10], list[i] .. '|' .. list[j], 1)
  end
end
return 1
