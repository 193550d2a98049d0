-- svc_status.lua: block or unblock a card, the authoritative online side (payments). The
-- blocklist registers pull is written after it by svc_blocklist.lua (another hash tag); until
-- then the card says listed = 0, and whoever sees that writes the list (docs/payments.md).
-- KEYS: 1 svc:{<card>}, 2 svc:{<card>}:ops, 3 svc:{<card>}:log.
-- ARGV: 1 status (active|blocked), 2 reason, 3 now ms, 4 who asks, 5 log length kept.
-- {'none'}; {'same', version, listed} already so; {'changed', version, '0'}.
local f = redis.call('HMGET', KEYS[1], 'status', 'version', 'listed', 'balance')
if not f[1] then
  return {'none'}
end
if f[1] == ARGV[1] then
  return {'same', f[2], f[3]}
end
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'reason', ARGV[2], 'updated_ms', ARGV[3],
           'listed', '0')
redis.call('LPUSH', KEYS[3], '- ' .. ARGV[1] .. ' 0 ' .. f[4] .. ' - ' .. ARGV[3] .. ' status ' ..
           ARGV[4])
while redis.call('LLEN', KEYS[3]) > tonumber(ARGV[5]) do
  local op, res = string.match(redis.call('RPOP', KEYS[3]), '^(%S+) (.*)$')
  if op and redis.call('HGET', KEYS[2], op) == res then
    redis.call('HDEL', KEYS[2], op)
  end
end
return {'changed', tostring(version), '0'}
