-- device.command: one command for one register's device, keyed by the caller's idempotency key.
-- KEYS: 1 the command hash devcmd:{S}:<key>, 2 the register's pending set devcmds:{S}:<register>
-- (both of the store's hash tag).
-- ARGV: 1 register, 2 device, 3 command, 4 args (MessagePack map, as the service encoded it),
-- 5 now (ms), 6 caller (identity text), 7 the key.
-- Returns {status, state, ok, result, error}: status 'created' (new, pending: publish the
-- event), 'same' (the same command again: a retry or a poll; its current state) or 'conflict'
-- (the key names another command; nothing changed). ok, result, error are '' unless done.
local h = redis.call('HMGET', KEYS[1], 'register', 'device', 'command', 'args', 'state', 'ok',
                     'result', 'error')
if h[5] then
  if h[1] ~= ARGV[1] or h[2] ~= ARGV[2] or h[3] ~= ARGV[3] or h[4] ~= ARGV[4] then
    return {'conflict', h[5], '', '', ''}
  end
  return {'same', h[5], h[6] or '', h[7] or '', h[8] or ''}
end
redis.call('HSET', KEYS[1], 'register', ARGV[1], 'device', ARGV[2], 'command', ARGV[3],
           'args', ARGV[4], 'state', 'pending', 'created_ms', ARGV[5], 'caller', ARGV[6])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[7])
return {'created', 'pending', '', '', ''}
