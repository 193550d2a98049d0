-- One change of a store's register configuration, once: the request id is claimed in the same
-- atomic step as the change and the version bump, so a request resent after its reply was lost
-- (even past the reply cache) bumps nothing and gets the version it made. Everything is checked
-- before the first write (Redis does not roll back a script that fails midway): a refused change
-- leaves no trace, not even its claimed id.
-- KEYS: 1 cfg:{S}, 2 the table the change is in (cfg:{S}:cashiers or cfg:{S}:promos; unused by
--       'set'), 3 cfg:{S}:live (promotion id -> end_ms, for promotions not ended by promo.end),
--       4 cfg:{S}:req:<request id>
-- ARGV: 1 op, 2 request id retention (s), 3 now (ms), 4 the table's limit, then by op:
--   set      field, value, ...        fields of cfg:{S}
--   cashier  id, row                  create or replace (at most the limit of cashiers)
--   replace  id, old row, new row, unlive (1: end a promotion)   only if the row is still old
--   promo    id, row, end_ms          create; refused if the id exists or limit live promotions
-- Returns {'ok', version}, {'dup', version} for a request id already used, or
--   {'conflict'|'too_many'|'stale'} with nothing written.
local function bump()
  local v = redis.call('HINCRBY', KEYS[1], 'version', 1)
  redis.call('SET', KEYS[4], v, 'EX', tonumber(ARGV[2]))
  return {'ok', v}
end

local done = redis.call('GET', KEYS[4])
if done then
  return {'dup', tonumber(done)}
end
local op, now, limit = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4])
if op == 'set' then
  for i = 5, #ARGV, 2 do
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
  return bump()
elseif op == 'cashier' then
  if redis.call('HEXISTS', KEYS[2], ARGV[5]) == 0 and redis.call('HLEN', KEYS[2]) >= limit then
    return {'too_many'}
  end
  redis.call('HSET', KEYS[2], ARGV[5], ARGV[6])
  return bump()
elseif op == 'replace' then
  if redis.call('HGET', KEYS[2], ARGV[5]) ~= ARGV[6] then
    return {'stale'}
  end
  redis.call('HSET', KEYS[2], ARGV[5], ARGV[7])
  if ARGV[8] == '1' then
    redis.call('HDEL', KEYS[3], ARGV[5])
  end
  return bump()
elseif op == 'promo' then
  if redis.call('HEXISTS', KEYS[2], ARGV[5]) == 1 then
    return {'conflict'}
  end
  local live, flat = 0, redis.call('HGETALL', KEYS[3])
  for i = 2, #flat, 2 do
    local ends = tonumber(flat[i]) or 0
    if ends == 0 or ends > now then live = live + 1 end
  end
  if live >= limit then
    return {'too_many'}
  end
  redis.call('HSET', KEYS[2], ARGV[5], ARGV[6])
  redis.call('HSET', KEYS[3], ARGV[5], ARGV[7])
  return bump()
end
return redis.error_reply('config_change: unknown op ' .. tostring(op))
