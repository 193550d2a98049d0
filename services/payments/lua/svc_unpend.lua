-- svc_unpend.lua: a status change is in the blocklist: forget that it began (payments).
-- KEYS: 1 {svcblock}:pending. ARGV: 1 card, 2 the ms its entry had when it was checked.
-- Removes the entry only if it is still that one (a newer change of the card keeps its own).
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
