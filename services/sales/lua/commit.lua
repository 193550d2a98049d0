-- Commit one sale atomically: refuse a known id, check returns against their originals, assign the
-- business day, append to the sales stream, track the register's sequence. Nothing is written
-- unless everything checks out, so a refused upload changes nothing.
-- KEYS: 1 sale hash, 2 sales stream (holds every payload; original sales are read from it), 3 register seq hash, 4 register pending zset,
--       5 business day, 6 review set, then pairs (original sale hash, returned hash) per original
-- ARGV: 1 sale id, 2 payload, 3 register, 4 seq, 5 store, 6 review flags, 7 today,
--       8 number of originals, then the original sale ids
local sale_key, stream, seqh, pend, bdayk, review = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local id, payload, reg, seq, store, flags, today = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6], ARGV[7]
local norig = tonumber(ARGV[8])

local existing = redis.call('HGET', sale_key, 'stream_id')
if existing then
  return {'dup', existing, redis.call('HGET', sale_key, 'bday') or '', 0, 0}
end

if norig > 0 then
  local sale = cmsgpack.unpack(payload)
  local need = {}
  for _, l in ipairs(sale.lines) do
    if l.return_of and not l.voided then
      need[l.return_of] = need[l.return_of] or {}
      need[l.return_of][l.sku] = (need[l.return_of][l.sku] or 0) - l.qty
    end
  end
  for i = 1, norig do
    local okey, rkey, oid = KEYS[5 + 2 * i], KEYS[6 + 2 * i], ARGV[8 + i]
    local osid = redis.call('HGET', okey, 'stream_id')
    local entry = osid and redis.call('XRANGE', stream, osid, osid)[1]
    if not entry then
      return {'err', 'original sale ' .. oid .. ' is not known in this store'}
    end
    local opay
    for f = 1, #entry[2], 2 do
      if entry[2][f] == 'payload' then opay = entry[2][f + 1] end
    end
    local orig = cmsgpack.unpack(opay)
    local sold = {}
    for _, l in ipairs(orig.lines) do
      if not l.voided and not l.return_of and l.qty > 0 then
        sold[l.sku] = (sold[l.sku] or 0) + l.qty
      end
    end
    for sku, q in pairs(need[oid] or {}) do
      local already = tonumber(redis.call('HGET', rkey, sku) or '0')
      local left = (sold[sku] or 0) - already
      if q > left then
        return {'err', 'return of ' .. q .. ' x ' .. sku .. ' exceeds what ' .. oid ..
                ' sold less earlier returns (' .. left .. ')'}
      end
    end
  end
  for i = 1, norig do
    for sku, q in pairs(need[ARGV[8 + i]] or {}) do
      redis.call('HINCRBY', KEYS[6 + 2 * i], sku, q)
    end
  end
end

local bday = redis.call('GET', bdayk)
if not bday then
  bday = today
  redis.call('SET', bdayk, bday)
end
local sid = redis.call('XADD', stream, '*', 'sale_id', id, 'store', store, 'bday', bday,
                       'payload', payload)
-- the payload lives once, in the stream; the hash finds it by stream id
redis.call('HSET', sale_key, 'stream_id', sid, 'bday', bday, 'flags', flags)
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
return {'ok', sid, bday, gap_from, gap_to}
