-- svc_blockread.lua: blocklist changes after a version, one consistent page (payments).
-- KEYS: 1 {svcblock}, 2 {svcblock}:version, 3 {svcblock}:state. ARGV: 1 since, 2 page size.
-- {list version, more (0|1), card, version, status, ...} oldest change first.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES',
                       'LIMIT', 0, tonumber(ARGV[2]) + 1)
local out = {tonumber(redis.call('GET', KEYS[2]) or '0'), 0}
for i = 1, #ids, 2 do
  if (i + 1) / 2 > tonumber(ARGV[2]) then
    out[2] = 1
    break
  end
  local st = redis.call('HGET', KEYS[3], ids[i]) or '0 active'
  out[#out + 1] = ids[i]
  out[#out + 1] = ids[i + 1]
  out[#out + 1] = string.match(st, '^%d+ (%S+)$') or 'active'
end
return out
