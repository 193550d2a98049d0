-- pay_move.lua: record one step's outcome (payments). A transition is kept in the history.
-- KEYS: 1 pay:{S}:<intent>, 2 paydue:{S}, 3 payhist:{S}:<intent>; for a refund (KEYS 1 and 3
--       payref:{S}:<no>, payhist:{S}:R:<no>) also 4 pay:{S}:<intent> and 5 payhist:{S}:<intent>
--       of the paid intent (one store's hash tag).
-- ARGV: 1 owner ('*': a provider's notification, whoever holds the lease), 2 now ms, 3 state,
--       4 reason, 5 next due ms, 6 intent (the due member), 7 keep ('1': the owner keeps the
--       lease, e.g. the mark "sent" before the provider is called), 8 retention s (0: forever),
--       then field, value pairs to set. A paid intent (state 'succeeded' asked) gets its
--       `paid_ms` (a field given: the provider's time; else now) once.
-- 3 when it is final already (a notification and a query's answer that both tell the end: the
-- second changes nothing), 0 when owner no longer holds the intent (its lease ran out and
-- another took it: this step's outcome is not recorded, the other worker finds it out again),
-- -1 when keep is asked but the intent was cancelled meanwhile (nothing is sent), 2 when a
-- success was recorded as 'reversing' (cancelled meanwhile), else 1.
-- A refund's end is written to the paid intent in this same script, so no crash can come
-- between them: a failed refund gives its reserved amount back to the intent's `refunded`
-- (once: `released`); a succeeded one adds to its `refunds_succeeded`, and the intent becomes
-- 'refunded' when those reach what was paid; a refund left to an operator ('manual') keeps its
-- amount reserved and adds it to `refunds_manual`. Each end is a line in the intent's history.
-- A 'manual' refund is the one final state that still moves: to 'succeeded' or 'failed' when
-- told ('*': a verified notification, or an operator's payment.refund_resolve), which takes
-- its amount off `refunds_manual` and then counts as that end.
-- Retention: the step that makes it final gives its keys an EXPIRE; a refund's end gives the
-- paid intent's keys theirs again once no other refund of it is open (refund_create.lua
-- removed it while one was).
local function is_final(s)
  return s == 'succeeded' or s == 'failed' or s == 'reversed' or s == 'refunded' or
         s == 'manual'
end

-- the paid intent (KEYS 4, 5) told of its refund's end (KEYS 1), in the same step
local function refund_ended(state, reason, was_manual)
  local r = redis.call('HMGET', KEYS[1], 'amount', 'released')
  local amount = tonumber(r[1]) or 0
  local p = redis.call('HMGET', KEYS[4], 'state', 'amount', 'refunded', 'refunds_manual')
  if not p[1] then
    return -- the intent expired before its refund ended: nothing to tell
  end
  if was_manual then
    redis.call('HINCRBY', KEYS[4], 'refunds_manual', -math.min(amount, tonumber(p[4] or '0')))
  end
  if state == 'failed' and r[2] ~= '1' then
    local back = math.min(amount, tonumber(p[3] or '0'))
    redis.call('HINCRBY', KEYS[4], 'refunded', -back)
    redis.call('HSET', KEYS[1], 'released', '1')
  elseif state == 'manual' then
    redis.call('HINCRBY', KEYS[4], 'refunds_manual', amount)
  end
  redis.call('RPUSH', KEYS[5], ARGV[2] .. ' ' .. p[1] .. ' refund ' .. string.sub(ARGV[6], 3) ..
             ' of ' .. amount .. ' fen ' .. state .. ': ' .. reason)
  if state == 'succeeded' then
    local done = redis.call('HINCRBY', KEYS[4], 'refunds_succeeded', amount)
    if p[1] == 'succeeded' and done >= tonumber(p[2]) then
      local why = 'refunded in full: ' .. p[2] .. ' fen'
      redis.call('HSET', KEYS[4], 'state', 'refunded', 'reason', why, 'updated_ms', ARGV[2])
      redis.call('RPUSH', KEYS[5], ARGV[2] .. ' refunded ' .. why)
    end
  end
  redis.call('LTRIM', KEYS[5], -200, -1)
end
local f = redis.call('HMGET', KEYS[1], 'owner', 'state', 'reason', 'cancel')
if not f[2] then
  return 0 -- gone (expired, or never there)
end
local notified = ARGV[1] == '*'
local was_manual = f[2] == 'manual' and KEYS[4] ~= nil and notified and
                   (ARGV[3] == 'succeeded' or ARGV[3] == 'failed')
if is_final(f[2]) and not was_manual then
  return 3
end
if f[1] ~= ARGV[1] and not notified then
  return 0
end
if ARGV[7] == '1' and f[4] == '1' then
  return -1
end
local state, reason, due = ARGV[3], ARGV[4], ARGV[5]
local result = 1
if state == 'succeeded' and f[4] == '1' then
  -- paid while the register gave it up: it is reversed next
  state, reason, due = 'reversing', 'paid after it was cancelled: ' .. reason, ARGV[2]
  result = 2
end
local final = is_final(state)
for i = 9, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
if ARGV[3] == 'succeeded' and not KEYS[4] and redis.call('HEXISTS', KEYS[1], 'paid_ms') == 0 then
  redis.call('HSET', KEYS[1], 'paid_ms', ARGV[2]) -- the provider said no time: now
end
redis.call('HSET', KEYS[1], 'state', state, 'reason', reason, 'updated_ms', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'steps', 1)
if ARGV[7] ~= '1' and (final or not notified) then
  redis.call('HSET', KEYS[1], 'owner', '', 'lease_until', '0',
             'due_ms', final and '0' or due)
  if final then
    redis.call('ZREM', KEYS[2], ARGV[6])
  else
    redis.call('ZADD', KEYS[2], due, ARGV[6])
  end
end
if final then
  -- a code not sent (cancelled, refused) is not kept in clear once the intent is over
  local code = redis.call('HGET', KEYS[1], 'code') or ''
  if #code > 8 and not string.find(code, '*', 1, true) then
    redis.call('HSET', KEYS[1], 'code',
               string.sub(code, 1, 4) .. string.rep('*', #code - 8) .. string.sub(code, -4))
  end
end
if f[2] ~= state or f[3] ~= reason then
  redis.call('RPUSH', KEYS[3], ARGV[2] .. ' ' .. state .. ' ' .. reason)
  redis.call('LTRIM', KEYS[3], -200, -1)
end
if final then
  local ttl = tonumber(ARGV[8])
  if ttl > 0 then
    redis.call('EXPIRE', KEYS[1], ttl)
    redis.call('EXPIRE', KEYS[3], ttl)
  end
  if KEYS[4] and redis.call('EXISTS', KEYS[4]) == 1 then
    refund_ended(state, reason, was_manual)
    local open
    if was_manual then -- it stopped being open when it became manual
      open = tonumber(redis.call('HGET', KEYS[4], 'refunds_open') or '0')
    else
      open = redis.call('HINCRBY', KEYS[4], 'refunds_open', -1)
    end
    if open < 0 then -- a refund made before refunds were counted
      redis.call('HSET', KEYS[4], 'refunds_open', '0')
      open = 0
    end
    if open == 0 and ttl > 0 and is_final(redis.call('HGET', KEYS[4], 'state')) then
      redis.call('EXPIRE', KEYS[4], ttl)
      redis.call('EXPIRE', KEYS[5], ttl)
    end
  end
end
return result
