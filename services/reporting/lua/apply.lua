-- Add a batch of committed sales to their stores' day aggregates, each sale once: the marker on
-- the sale's own hash makes a redelivered sale (after a crash before XACK) a no-op, in the same
-- atomic step. Increments are summed per key and field over the batch first, so a batch of 100
-- five-line sales costs a few hundred Redis calls instead of thousands.
-- ARGV: 1 max distinct SKUs of one sale counted for basket pairs, 2 n, then 5 per sale:
--       sale hash key, payload, store, business day, hour of the sale (local)
local maxpairs, n = tonumber(ARGV[1]), tonumber(ARGV[2])
local inc, seqs, days = {}, {}, {}
local function add(key, field, v)
  if v == nil or v == 0 then return end
  local t = inc[key]
  if not t then t = {}; inc[key] = t end
  t[field] = (t[field] or 0) + v
end
local function seq(key, reg, s)
  local k = key .. '\0' .. reg
  local t = seqs[k]
  if not t then t = {key = key, reg = reg, min = s, max = s}; seqs[k] = t end
  if s < t.min then t.min = s end
  if s > t.max then t.max = s end
end

local applied = 0
for i = 0, n - 1 do
  local b = 3 + i * 5
  local store, day, hour = ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
  if redis.call('HSETNX', ARGV[b], 'reporting', 1) == 1 then
    applied = applied + 1
    local s = cmsgpack.unpack(ARGV[b + 1])
    local P = 'rep:{' .. store .. '}:' .. day
    local R = P .. ':regs'
    local reg, cashier = s.register, s.cashier
    days['rep:{' .. store .. '}:days'] = day
    seq(R, reg, s.seq)
    add(R, reg .. ':records', 1)
    if s.kind == 'nosale' then
      add(P, 'nosale', 1)
      add(R, reg .. ':nosale', 1)
    else
      add(P, 'tickets', 1)
      add(P, s.kind == 'return' and 'return_tickets' or 'sale_tickets', 1)
      local skus, nskus = {}, 0
      for _, l in ipairs(s.lines) do
        if l.voided then
          add(P, 'voided_lines', 1)
        else
          if l.return_of then
            add(P, 'returns', l.amount)
          else
            add(P, 'gross', l.gross)
            add(P, 'discounts', l.promo_discount + l.ticket_discount)
            if not skus[l.sku] and nskus < maxpairs then
              skus[l.sku] = true
              nskus = nskus + 1
            end
          end
          add(P, 'total', l.amount)
          add(P .. ':items', l.sku .. ':qty', l.qty)
          add(P .. ':items', l.sku .. ':amount', l.amount)
          add(P .. ':cats', (l.category or '') .. ':amount', l.amount)
          add(P .. ':tax', l.tax_rate_bp .. ':gross', l.amount)
          add(P .. ':tax', l.tax_rate_bp .. ':tax', l.tax)
        end
      end
      for _, t in ipairs(s.tenders) do
        add(P .. ':tenders', t.kind, t.amount)
        add(R, reg .. ':tender:' .. t.kind, t.amount)
      end
      add(P, 'change', s.change)
      add(P, 'cash_rounding', s.cash_rounding)
      add(R, reg .. ':change', s.change)
      add(R, reg .. ':tickets', 1)
      add(R, reg .. ':total', s.total)
      add(P .. ':cashiers', cashier .. ':tickets', 1)
      add(P .. ':cashiers', cashier .. ':total', s.total)
      add(P .. ':hours', hour, s.total)
      local list = {}
      for sku in pairs(skus) do list[#list + 1] = sku end
      table.sort(list)
      for x = 1, #list do
        for y = x + 1, #list do
          add(P .. ':pairs', list[x] .. '|' .. list[y], 1)
        end
      end
    end
  end
end

for key, fields in pairs(inc) do
  for field, v in pairs(fields) do
    redis.call('HINCRBY', key, field, v)
  end
end
for _, t in pairs(seqs) do
  local first = tonumber(redis.call('HGET', t.key, t.reg .. ':first') or '0')
  if first == 0 or t.min < first then redis.call('HSET', t.key, t.reg .. ':first', t.min) end
  local last = tonumber(redis.call('HGET', t.key, t.reg .. ':last') or '0')
  if t.max > last then redis.call('HSET', t.key, t.reg .. ':last', t.max) end
end
for key, day in pairs(days) do
  redis.call('SADD', key, day)
end
return applied
