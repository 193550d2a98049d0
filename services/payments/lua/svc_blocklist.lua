-- svc_blocklist.lua: write a card's status into the blocklist registers pull (payments).
-- KEYS: 1 {svcblock} (card -> list version of its last change), 2 {svcblock}:version,
--       3 {svcblock}:state (card -> "<card version> <status>").
-- ARGV: 1 card, 2 status (active|blocked), 3 the card's version with that status.
-- Only a newer card version is written (two operators racing, or a late repair, never put an
-- older status back); the list version moves only when what registers know changes, so a
-- repeated write changes nothing. {list version, 1 changed | 0}.
local cur = redis.call('HGET', KEYS[3], ARGV[1])
local was = 'active'
if cur then
  local v, st = string.match(cur, '^(%d+) (%S+)$')
  if tonumber(v) >= tonumber(ARGV[3]) then
    return {tonumber(redis.call('GET', KEYS[2]) or '0'), 0}
  end
  was = st
end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3] .. ' ' .. ARGV[2])
if was == ARGV[2] then
  return {tonumber(redis.call('GET', KEYS[2]) or '0'), 0}
end
local v = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[1], v, ARGV[1])
return {v, 1}
