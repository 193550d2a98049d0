-- svc_deduct.lua: take money from a card once per sale attempt, online or offline (payments).
-- KEYS: 1 svc:{<card>}, 2 svc:{<card>}:ops, 3 svc:{<card>}:spent, 4 svc:{<card>}:log.
-- ARGV: 1 mode ('pay': refused when it breaks a rule; 'offline': done at the till already, so
--       always applied, and flagged when it breaks one; 'void': the register gives the attempt
--       up: taken, it is given back (flags 'refunded'); not seen yet, it is written as voided so
--       that a card.pay still on its way is never applied), 2 op key ("d:<sale_id>:<attempt>"),
--       3 amount (fen > 0), 4 now ms, 5 the day's spent field ("day:YYYYMMDD"), 6 the meal's
--       ("meal:YYYYMMDD:<meal>", '' outside meals), 7 oldest day kept in spent (YYYYMMDD),
--       8 register, 9 log length kept, 10 seconds spent is kept after its last write.
-- {'none'} no such card; {'conflict', result} this sale attempt was recorded with another
-- amount; {'dup', result, status, version, listed} recorded already (nothing changes);
-- {'new', result, status, version, listed}. result: "<outcome> <amount> <balance> <flags> <ms>
-- <mode> <register> <day> <meal>", outcome ok (applied) or the refusal (blocked, balance,
-- daily, meal), flags '-' or what an applied offline deduction broke (blocked, overdrawn,
-- over_daily, over_meal, over_offline_cap), day and meal the spent fields an applied deduction
-- added its amount to ('-': none), so that a void or a refund gives back to those and no
-- other (results written before they were kept give back no spending). Every result is kept:
-- the same request answers the same. An offline upload of an attempt that was refused online
-- is applied (the till took it offline after the refusal; nothing was taken before) and
-- replaces the refusal.
-- A void gives back what the deduction took less what was refunded of it: to the balance, and
-- to the day's and the meal's spending it was counted in (never below zero; a field dropped
-- already is not written again), so a voided payment no longer counts against the limits.
local f = redis.call('HMGET', KEYS[1], 'status', 'balance', 'daily_limit', 'meal_limit',
                     'offline_cap', 'version', 'listed')
if not f[1] then
  return {'none'}
end
local prior = redis.call('HGET', KEYS[2], ARGV[2])
local prior_outcome = prior and string.match(prior, '^(%S+)') or nil
if prior_outcome == 'voided' then
  return {'dup', prior, f[1], f[6], f[7]} -- given up: never applied again, whatever is asked
end
if prior and ARGV[1] ~= 'void' then
  if string.match(prior, '^%S+ (%S+)') ~= ARGV[3] then
    return {'conflict', prior}
  end
  if not (ARGV[1] == 'offline' and string.match(prior, '^(%S+)') ~= 'ok') then
    return {'dup', prior, f[1], f[6], f[7]}
  end
end
-- Take n fen off the spent fields a deduction's result names, never below zero; a field no
-- longer kept (dropped with its day) stays dropped. The day and meal fields, '-' for none.
local function unspend(result, n)
  local day, meal = string.match(result, '^%S+ %S+ %S+ %S+ %S+ %S+ %S+ (%S+) (%S+)')
  for _, field in ipairs({day or '-', meal or '-'}) do
    local spent = field ~= '-' and tonumber(redis.call('HGET', KEYS[3], field) or '') or nil
    if spent then
      redis.call('HSET', KEYS[3], field, string.format('%d', math.max(0, spent - n)))
    end
  end
  return day or '-', meal or '-'
end
local amount, balance = tonumber(ARGV[3]), tonumber(f[2])
local outcome, flags, after, day_field, meal_field = 'ok', '-', balance, '-', '-'
if ARGV[1] == 'void' then
  outcome = 'voided'
  if prior_outcome == 'ok' then -- taken: given back, and so is its spending
    local taken = tonumber(string.match(prior, '^%S+ (%S+)')) -
                  tonumber(redis.call('HGET', KEYS[2], 'rf:' .. ARGV[2]) or '0')
    after = redis.call('HINCRBY', KEYS[1], 'balance', taken)
    redis.call('HINCRBY', KEYS[1], 'version', 1)
    redis.call('HSET', KEYS[1], 'updated_ms', ARGV[4])
    f[6] = string.format('%d', tonumber(f[6]) + 1)
    flags, amount = 'refunded', taken
    day_field, meal_field = unspend(prior, taken)
  end
else
  local daily, meal, cap = tonumber(f[3]), tonumber(f[4]), tonumber(f[5])
  local s = redis.call('HMGET', KEYS[3], ARGV[5], ARGV[6] ~= '' and ARGV[6] or ARGV[5])
  local day_spent, meal_spent = tonumber(s[1] or '0'), tonumber(s[2] or '0')
  local broken = {}
  if f[1] ~= 'active' then broken[#broken + 1] = 'blocked' end
  if balance < amount then broken[#broken + 1] = 'balance' end
  if daily > 0 and day_spent + amount > daily then broken[#broken + 1] = 'daily' end
  if ARGV[6] ~= '' and meal > 0 and meal_spent + amount > meal then
    broken[#broken + 1] = 'meal'
  end
  if ARGV[1] == 'pay' and #broken > 0 then
    outcome = broken[1]
  else
    local names = {blocked = 'blocked', balance = 'overdrawn', daily = 'over_daily',
                   meal = 'over_meal'}
    local list = {}
    for _, b in ipairs(broken) do list[#list + 1] = names[b] end
    if ARGV[1] == 'offline' and cap > 0 and amount > cap then
      list[#list + 1] = 'over_offline_cap'
    end
    if #list > 0 then flags = table.concat(list, ',') end
    after = redis.call('HINCRBY', KEYS[1], 'balance', -amount)
    redis.call('HINCRBY', KEYS[1], 'version', 1)
    redis.call('HSET', KEYS[1], 'updated_ms', ARGV[4])
    f[6] = string.format('%d', tonumber(f[6]) + 1)
    redis.call('HINCRBY', KEYS[3], ARGV[5], amount)
    day_field = ARGV[5]
    if ARGV[6] ~= '' then
      redis.call('HINCRBY', KEYS[3], ARGV[6], amount)
      meal_field = ARGV[6]
    end
    for _, field in ipairs(redis.call('HKEYS', KEYS[3])) do
      local d = string.match(field, '^%a+:(%d+)')
      if not d or d < ARGV[7] then
        redis.call('HDEL', KEYS[3], field)
      end
    end
    redis.call('EXPIRE', KEYS[3], ARGV[10])
  end
end
local result = outcome .. ' ' .. string.format('%d', amount) .. ' ' .. string.format('%d', after) .. ' ' ..
               flags .. ' ' .. ARGV[4] .. ' ' .. ARGV[1] .. ' ' .. ARGV[8] .. ' ' .. day_field ..
               ' ' .. meal_field
redis.call('HSET', KEYS[2], ARGV[2], result)
redis.call('LPUSH', KEYS[4], ARGV[2] .. ' ' .. result)
while redis.call('LLEN', KEYS[4]) > tonumber(ARGV[9]) do
  local op, res = string.match(redis.call('RPOP', KEYS[4]), '^(%S+) (.*)$')
  if op and redis.call('HGET', KEYS[2], op) == res then
    redis.call('HDEL', KEYS[2], op, 'rf:' .. op)
  end
end
return {'new', result, f[1], f[6], f[7]}
