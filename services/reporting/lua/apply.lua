-- Apply a batch of sales to the day aggregates, each sale once, all or nothing. The service has
-- already validated every sale and summed the increments of the whole batch per key and field;
-- this script makes it atomic and idempotent, in three phases:
--   1. check every argument (counts, integers, seqs) and refuse the batch if one is wrong;
--   2. if any sale of the batch was applied before (a redelivery after a crash before XACK),
--      return the indexes of those sales, so the service leaves them out and tries again;
--   3. check that no total would leave the exact range of a Lua number (|v| < 2^53) and that
--      every stored total it touches is an integer, and refuse the batch if not.
-- Only then are the applied markers and the increments written, together. A refusal or a
-- failing check writes nothing, so a retry never finds markers without their totals.
-- ARGV: n, n sale hash keys, m, m x (key, field, delta), k, k x (key, register, min seq, max seq),
--       d, d x (days set key, day)
-- Returns {'ok', n}, {'applied', {0-based indexes}} or {'refused', reason}.
local LIMIT = 9007199254740992 -- 2^53: beyond it a Lua number no longer holds every integer
local DIGITS_MAX = 17          -- "-9007199254740991" is 17 characters

-- An integer string with |v| < 2^53, as a number; nil otherwise. Rounding to a double is
-- monotonic and 2^53 is exact, so a string at or beyond the limit can never pass.
local function int(s)
  if type(s) ~= 'string' or #s > DIGITS_MAX or not string.match(s, '^%-?%d+$') then
    return nil
  end
  local v = tonumber(s)
  if v >= LIMIT or v <= -LIMIT then return nil end
  return v
end

local pos = 1
local function take()
  local v = ARGV[pos]
  pos = pos + 1
  return v
end

local function count(what)
  local v = int(take())
  if not v or v < 0 then error({refused = 'bad ' .. what .. ' count'}) end
  return v
end

local function text(what)
  local v = take()
  if type(v) ~= 'string' or v == '' then error({refused = 'missing ' .. what}) end
  return v
end

-- phase 1: parse and check every argument, write nothing
local ok, parsed = pcall(function()
  local p = {sales = {}, incs = {}, seqs = {}, days = {}}
  for i = 1, count('sale') do p.sales[i] = text('sale key') end
  for i = 1, count('increment') do
    local key, field, delta = text('key'), take(), take()
    local v = int(delta)
    if type(field) ~= 'string' or not v then
      error({refused = 'increment ' .. tostring(delta) .. ' of ' .. key .. ' ' ..
                       tostring(field) .. ' is not an integer below 2^53'})
    end
    p.incs[i] = {key, field, delta, v}
  end
  for i = 1, count('sequence') do
    local key, reg, lo, hi = text('key'), text('register'), take(), take()
    local l, h = int(lo), int(hi)
    if not l or not h or l < 1 or h < l then
      error({refused = 'sequences ' .. tostring(lo) .. '..' .. tostring(hi) .. ' of ' .. reg ..
                       ' are not 1 <= min <= max'})
    end
    p.seqs[i] = {key, reg, l, h, lo, hi}
  end
  for i = 1, count('day') do p.days[i] = {text('key'), text('day')} end
  if pos - 1 ~= #ARGV then error({refused = 'argument count does not match the counts'}) end
  return p
end)
if not ok then
  if type(parsed) == 'table' then return {'refused', parsed.refused} end
  error(parsed)
end

-- phase 2: sales applied before
local done = {}
for i, key in ipairs(parsed.sales) do
  if redis.call('HEXISTS', key, 'reporting') == 1 then done[#done + 1] = i - 1 end
end
if #done > 0 then
  return {'applied', done}
end

-- phase 3: every total stays exact; the same key and field may come twice, so sum as we go.
-- Stored totals are read with one HMGET per key (in chunks), not one HGET per field.
local CHUNK = 500 -- fields per HMGET: well below Lua's limit on unpacked arguments
local after, fields, order = {}, {}, {}
for _, inc in ipairs(parsed.incs) do
  local key, field = inc[1], inc[2]
  if not fields[key] then
    fields[key], after[key] = {}, {}
    order[#order + 1] = key
  end
  if after[key][field] == nil then
    after[key][field] = false
    local f = fields[key]
    f[#f + 1] = field
  end
end
for _, key in ipairs(order) do
  local f = fields[key]
  for first = 1, #f, CHUNK do
    local last = math.min(first + CHUNK - 1, #f)
    local stored = redis.call('HMGET', key, unpack(f, first, last))
    for i = first, last do
      local s = stored[i - first + 1]
      local cur = s and int(s)
      if s and not cur then
        return {'refused', 'stored ' .. key .. ' ' .. f[i] .. ' = ' .. s ..
                           ' is not an integer below 2^53'}
      end
      after[key][f[i]] = cur or 0
    end
  end
end
for _, inc in ipairs(parsed.incs) do
  local key, field, v = inc[1], inc[2], inc[4]
  local cur = after[key][field]
  local sum = cur + v
  if sum >= LIMIT or sum <= -LIMIT then
    return {'refused', 'total ' .. key .. ' ' .. field .. ' would pass 2^53 - 1 (' ..
                       string.format('%.0f', cur) .. ' + ' .. inc[3] .. ')'}
  end
  after[key][field] = sum
end
local seqs = {} -- key -> register -> {first, last} as they will be written
for _, s in ipairs(parsed.seqs) do
  local key, reg, lo, hi = s[1], s[2], s[3], s[4]
  seqs[key] = seqs[key] or {}
  local b = seqs[key][reg]
  if not b then
    local first = redis.call('HGET', key, reg .. ':first')
    local last = redis.call('HGET', key, reg .. ':last')
    local f, l = first and int(first), last and int(last)
    if (first and not f) or (last and not l) then
      return {'refused', 'stored sequences of ' .. reg .. ' in ' .. key .. ' are not integers'}
    end
    b = {f or 0, l or 0}
    seqs[key][reg] = b
  end
  if b[1] == 0 or lo < b[1] then b[1], b.write_first = lo, s[5] end
  if hi > b[2] then b[2], b.write_last = hi, s[6] end
end

-- all checked: write markers and effects together
for _, key in ipairs(parsed.sales) do redis.call('HSET', key, 'reporting', 1) end
for _, inc in ipairs(parsed.incs) do redis.call('HINCRBY', inc[1], inc[2], inc[3]) end
for key, regs in pairs(seqs) do
  for reg, b in pairs(regs) do
    if b.write_first then redis.call('HSET', key, reg .. ':first', b.write_first) end
    if b.write_last then redis.call('HSET', key, reg .. ':last', b.write_last) end
  end
end
for _, day in ipairs(parsed.days) do redis.call('SADD', day[1], day[2]) end
return {'ok', #parsed.sales}
