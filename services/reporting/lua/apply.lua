-- Apply a batch of sales to the day aggregates, each sale once, all or nothing. The service has
-- already validated every sale and summed the increments of the whole batch per key and field;
-- this script makes it atomic and idempotent:
--   1. check every argument (counts, texts, seqs, deltas within 2^53) and refuse the batch if
--      one is wrong;
--   2. if any sale of the batch was applied before (a redelivery after a crash before XACK),
--      return the indexes of those sales, so the service leaves them out and tries again;
--   3. read what the sequences and days will be compared with (this also fails on a key of the
--      wrong type before anything is written);
--   4. increment every total, each with redis.pcall, keeping what was done. If one fails (a
--      stored value or a delta that is not an integer, an int64 overflow) or its new total
--      leaves +-(2^53 - 1), the range where a Lua number is exact, the increments done so far
--      are undone, newest first, and the batch is refused; an error that is not the batch's
--      (a key of the wrong type, Redis refusing writes) is raised after the same undo;
--   5. only then write the sequences, the applied markers and the days.
-- Redis does not roll a script back, but it runs it alone: nobody sees totals between steps 4
-- and their undo, and a refused or failed batch leaves every total, field and marker as it
-- found them, so a retry never finds markers without their totals. Reading every stored total
-- first would cost a read per field on every batch; the undo costs only on the rare refusal.
-- ARGV: n, n sale hash keys, m, m x (key, field, delta), k, k x (key, register, min seq, max seq),
--       d, d x (days set key, day)
-- Returns {'ok', n}, {'applied', {0-based indexes}} or {'refused', reason}.
local LIMIT = 9007199254740992 -- 2^53: beyond it a Lua number no longer holds every integer
local DIGITS_MAX = 17          -- "-9007199254740991" is 17 characters
local call, pcall_redis, find, sub = redis.call, redis.pcall, string.find, string.sub
local A = ARGV

-- An integer string with |v| < 2^53, as a number; nil otherwise. Rounding to a double is
-- monotonic and 2^53 is exact, so a string at or beyond the limit can never pass.
local function int(s)
  if type(s) ~= 'string' or #s > DIGITS_MAX or not find(s, '^%-?%d+$') then
    return nil
  end
  local v = tonumber(s)
  if v >= LIMIT or v <= -LIMIT then return nil end
  return v
end

local function refused(reason)
  return {'refused', reason}
end

-- phase 1: check every argument, write nothing. Positions: sales from 2, then m at M, the
-- increments from M + 1 (3 each), k at K, the sequences from K + 1 (4 each), d at D.
local argc = #A
local n = int(A[1])
if not n or n < 0 then return refused('bad sale count') end
local M = n + 2
local m = int(A[M])
if not m or m < 0 then return refused('bad increment count') end
local K = M + 1 + 3 * m
local k = int(A[K])
if not k or k < 0 then return refused('bad sequence count') end
local D = K + 1 + 4 * k
local d = int(A[D])
if not d or d < 0 or D + 2 * d ~= argc then
  return refused('argument count does not match the counts')
end
for i = 2, n + 1 do
  if A[i] == '' then return refused('missing sale key') end
end
-- a delta is checked here for its range only: HINCRBY itself refuses any text that is not an
-- exact decimal integer, and phase 4 undoes and refuses the batch then
local delta = {}
for i = 1, m do
  local at = M + 3 * i - 2
  local v = tonumber(A[at + 2])
  if A[at] == '' or not v or v >= LIMIT or v <= -LIMIT then
    return refused('increment ' .. A[at + 2] .. ' of ' .. A[at] .. ' ' .. A[at + 1] ..
                   ' is not an integer below 2^53')
  end
  delta[i] = v
end
for at = K + 1, D - 1, 4 do
  local l, h = int(A[at + 2]), int(A[at + 3])
  if A[at] == '' or A[at + 1] == '' or not l or not h or l < 1 or h < l then
    return refused('sequences ' .. A[at + 2] .. '..' .. A[at + 3] .. ' of ' .. A[at + 1] ..
                   ' are not 1 <= min <= max')
  end
end
for at = D + 1, argc do
  if A[at] == '' then return refused('missing day or days key') end
end

-- phase 2: sales applied before
local done = {}
for i = 2, n + 1 do
  if call('HEXISTS', A[i], 'reporting') == 1 then done[#done + 1] = i - 2 end
end
if #done > 0 then
  return {'applied', done}
end

-- phase 3: the stored sequences and days
local seqs = {} -- key -> register -> {first, last, write first, write last}
for at = K + 1, D - 1, 4 do
  local key, reg, lo, hi = A[at], A[at + 1], tonumber(A[at + 2]), tonumber(A[at + 3])
  local regs = seqs[key]
  if not regs then
    regs = {}
    seqs[key] = regs
  end
  local b = regs[reg]
  if not b then
    local stored = call('HMGET', key, reg .. ':first', reg .. ':last')
    local f, l = stored[1] and int(stored[1]), stored[2] and int(stored[2])
    if (stored[1] and not f) or (stored[2] and not l) then
      return refused('stored sequences of ' .. reg .. ' in ' .. key .. ' are not integers')
    end
    b = {f or 0, l or 0}
    regs[reg] = b
  end
  if b[1] == 0 or lo < b[1] then b[1], b[3] = lo, A[at + 2] end
  if hi > b[2] then b[2], b[4] = hi, A[at + 3] end
end
local new_days = {}
for at = D + 1, argc, 2 do
  if call('SISMEMBER', A[at], A[at + 1]) == 0 then new_days[#new_days + 1] = at end
end

-- phase 4: the totals, undone if one cannot be written exactly. lens[key] is the key's field
-- count as last seen, so that a total that comes back equal to its delta (it was 0 or absent)
-- tells by the count whether it created its field, which the undo then deletes.
local lens, created, applied = {}, {}, 0
local function undo()
  for i = applied, 1, -1 do
    local at = M + 3 * i - 2
    local key, field, s = A[at], A[at + 1], A[at + 2]
    if created[i] then
      call('HDEL', key, field)
    elseif s ~= '0' then
      call('HINCRBY', key, field, sub(s, 1, 1) == '-' and sub(s, 2) or '-' .. s)
    end
  end
end
for i = 1, m do
  local at = M + 3 * i - 2
  local key, field = A[at], A[at + 1]
  local len = lens[key]
  if not len then
    len = pcall_redis('HLEN', key)
    if type(len) == 'table' then
      undo()
      return len
    end
    lens[key] = len
  end
  local total = pcall_redis('HINCRBY', key, field, A[at + 2])
  if type(total) == 'table' then
    undo()
    local e = total.err or ''
    if find(e, 'not an integer', 1, true) or find(e, 'overflow', 1, true) then
      return refused('total ' .. key .. ' ' .. field .. ' cannot take ' .. A[at + 2] ..
                     ': the stored total, the delta or the sum is not an integer below 2^53 (' ..
                     e .. ')')
    end
    return total
  end
  applied = i
  if total == delta[i] then
    len = call('HLEN', key)
    created[i] = len > lens[key]
    lens[key] = len
  end
  if total >= LIMIT or total <= -LIMIT then
    undo()
    return refused('total ' .. key .. ' ' .. field .. ' would pass 2^53 - 1 (' ..
                   string.format('%.0f', total - delta[i]) .. ' + ' .. A[at + 2] .. ')')
  end
end

-- phase 5: every total written; the sequences, markers and days cannot fail now (their keys
-- were read above, and Redis checks memory only before a script's first write)
for key, regs in pairs(seqs) do
  for reg, b in pairs(regs) do
    if b[3] then call('HSET', key, reg .. ':first', b[3]) end
    if b[4] then call('HSET', key, reg .. ':last', b[4]) end
  end
end
for i = 2, n + 1 do call('HSET', A[i], 'reporting', 1) end
for _, at in ipairs(new_days) do call('SADD', A[at], A[at + 1]) end
return {'ok', n}
