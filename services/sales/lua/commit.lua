-- Commit one sale atomically: refuse a known id, check return lines against their original
-- sales, assign the business day, append to the sales stream, track the register's sequence.
-- Everything is validated before the first write, so a refused upload changes nothing (and a
-- write refused by Redis, e.g. out of memory, is the first write: it changes nothing either).
-- KEYS: 1 sale hash, 2 sales stream (holds every payload; original sales are read from it),
--       3 register seq hash, 4 register pending zset, 5 business day, 6 review set,
--       then pairs (original sale hash, returned hash) per original
-- ARGV: 1 sale id, 2 payload, 3 register, 4 seq, 5 store, 6 review flags, 7 today,
--       8 number of originals, 9 return lines (MessagePack array of [original index, sku,
--       unit, qty returned > 0, amount refunded >= 0, refunded per unit]), 10 request id,
--       then the original ids
-- Returns {'ok', stream id, day, gap from, gap to, review flags}, {'dup', stream id, day, 0, 0,
-- same request (1: a retry of the request that committed it), review flags} or
-- {'err', code, message}. The request id is kept on the sale hash, so a retry of the committing
-- request is told so and answered with the first reply (the service layer's reply cache is not
-- needed for uploads).
--
-- A returned hash holds, per SKU, the quantity returned so far (field <sku>) and the fen
-- refunded so far (field fen:<sku>; ':' never occurs in a SKU). A return line may refund per
-- unit at most what the original sale's lines of that SKU were paid per unit (their amount
-- after discounts / their quantity, rounded up to the fen), and all returns of a SKU together
-- at most what was paid for it. A return that breaks one of these rules happened all the same
-- (the money left the drawer, and the register journaled it): it is committed, booked against
-- its original, and flagged for review (over_return, return_price, over_refund, return_unit,
-- original_gone), never refused, because a refusal would stop the register's uploads. Only a
-- return that contradicts itself (pcs and kg lines of one SKU) is refused, as a corrupt sale.
local sale_key, stream, seqh, pend, bdayk, review = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local id, payload, reg, seq, store, flags, today = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6], ARGV[7]
local norig = tonumber(ARGV[8])
local req = ARGV[10]
local FIXED_KEYS, FIXED_ARGS = 6, 10

local existing = redis.call('HGET', sale_key, 'stream_id')
if existing then
  local first = redis.call('HMGET', sale_key, 'bday', 'req', 'flags')
  return {'dup', existing, first[1] or '', 0, 0, first[2] == req and 1 or 0, first[3] or ''}
end

-- what the original's live sale lines of each SKU sold: quantity, amount paid, unit
local function sold_by_sku(opay)
  local sold = {}
  for _, l in ipairs(cmsgpack.unpack(opay).lines or {}) do
    if not l.voided and not l.return_of and type(l.qty) == 'number' and l.qty > 0 then
      local s = sold[l.sku] or {qty = 0, amount = 0, unit = l.unit}
      s.qty, s.amount = s.qty + l.qty, s.amount + l.amount
      sold[l.sku] = s
    end
  end
  return sold
end

local function refuse(msg)
  return {'err', 'bad_return', msg}
end

-- review flags this script adds (a return beyond what its original allows), kept short
local extra = {}
local extra_len = #flags
local function flag(f)
  if extra_len + #f + 1 <= 1000 then
    extra[#extra + 1] = f
    extra_len = extra_len + #f + 1
  end
end

local incr = {}
if norig > 0 then
  local need = {}
  for i = 1, norig do need[i] = {} end
  for _, r in ipairs(cmsgpack.unpack(ARGV[9])) do
    local o, sku, unit, qty, refund, per_unit = r[1], r[2], r[3], r[4], r[5], r[6]
    local n = need[o][sku]
    if not n then
      n = {qty = 0, refund = 0, unit = unit, per_unit = 0}
      need[o][sku] = n
    end
    n.qty, n.refund = n.qty + qty, n.refund + refund
    if per_unit > n.per_unit then n.per_unit = per_unit end
    if unit ~= n.unit then
      return refuse('return of ' .. sku .. ' mixes pcs and kg lines')
    end
  end
  for i = 1, norig do
    local okey, rkey, oid = KEYS[FIXED_KEYS - 1 + 2 * i], KEYS[FIXED_KEYS + 2 * i], ARGV[FIXED_ARGS + i]
    local osid = redis.call('HGET', okey, 'stream_id')
    if not osid then
      -- the original may be on a register that has not uploaded it yet: the refund happened,
      -- so this is "not yet", never a refusal (the register retries until it arrives)
      return {'err', 'original_pending', 'original sale ' .. oid ..
              ' is not known in this store (yet); retry once it is uploaded'}
    end
    local entry = redis.call('XRANGE', stream, osid, osid)[1]
    local sold
    if entry then
      local opay
      for f = 1, #entry[2], 2 do
        if entry[2][f] == 'payload' then opay = entry[2][f + 1] end
      end
      sold = sold_by_sku(opay)
    else
      flag('original_gone:' .. oid) -- nothing to check against; booked all the same
    end
    for sku, n in pairs(need[i]) do
      if sold then
        local s = sold[sku] or {qty = 0, amount = 0, unit = n.unit}
        local got = redis.call('HMGET', rkey, sku, 'fen:' .. sku)
        local left = s.qty - tonumber(got[1] or '0')
        local left_fen = s.amount - tonumber(got[2] or '0')
        if n.unit ~= s.unit then
          flag('return_unit:' .. sku)
        elseif n.qty > left or s.qty <= 0 then
          flag('over_return:' .. sku)
        end
        if n.unit == s.unit and s.qty > 0 then
          -- paid per unit (per kg for weighed items), rounded up to the fen; exact in doubles
          -- because libpos bounds every amount to 10^12 fen
          local scale = s.unit == 'kg' and 1000 or 1
          if n.per_unit > math.ceil(s.amount * scale / s.qty) then
            flag('return_price:' .. sku)
          end
        end
        if n.refund > left_fen then
          flag('over_refund:' .. sku)
        end
      end
      incr[#incr + 1] = {rkey, sku, n.qty, n.refund}
    end
  end
end
if #extra > 0 then
  flags = (flags ~= '' and flags .. ',' or '') .. table.concat(extra, ',')
end

-- every check passed: from here on, only writes
for _, w in ipairs(incr) do
  redis.call('HINCRBY', w[1], w[2], w[3])
  redis.call('HINCRBY', w[1], 'fen:' .. w[2], w[4])
end

local bday = redis.call('GET', bdayk)
if not bday then
  bday = today
  redis.call('SET', bdayk, bday)
end
local sid = redis.call('XADD', stream, '*', 'sale_id', id, 'store', store, 'bday', bday,
                       'payload', payload)
-- the payload lives once, in the stream; the hash finds it by stream id
redis.call('HSET', sale_key, 'stream_id', sid, 'bday', bday, 'flags', flags, 'req', req)
if flags ~= '' then
  redis.call('SADD', review, id)
end

local contig = tonumber(redis.call('HGET', seqh, reg) or '0')
local gap_from, gap_to = 0, 0
if seq == contig + 1 then
  contig = seq
  while redis.call('ZSCORE', pend, tostring(contig + 1)) do
    redis.call('ZREM', pend, tostring(contig + 1))
    contig = contig + 1
  end
  redis.call('HSET', seqh, reg, contig)
elseif seq > contig + 1 then
  redis.call('ZADD', pend, seq, tostring(seq))
end
local low = redis.call('ZRANGE', pend, 0, 0)
if low[1] then
  gap_from, gap_to = contig + 1, tonumber(low[1]) - 1
end
return {'ok', sid, bday, gap_from, gap_to, flags}
