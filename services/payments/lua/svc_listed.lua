-- svc_listed.lua: the card's status is in the blocklist now (payments).
-- KEYS: 1 svc:{<card>}. ARGV: 1 the card version written to the list.
-- Marks it only when the card has not changed since: 1 marked, 0 not.
if redis.call('HGET', KEYS[1], 'version') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'listed', '1')
  return 1
end
return 0
