-- device.result: a register's answer to one of its own commands.
-- KEYS: 1 the command hash devcmd:{S}:<key>, 2 the caller's pending set devcmds:{S}:<register>.
-- ARGV: 1 the caller's register, 2 ok ('0'/'1'), 3 result (MessagePack map), 4 error text,
-- 5 now (ms), 6 seconds to keep a done command, 7 the key.
-- Returns 0 no such command of this register (another register's is not told apart from none),
-- 1 done now, 2 was done already (nothing changed: a node resending its result).
local h = redis.call('HMGET', KEYS[1], 'register', 'state')
if not h[1] or h[1] ~= ARGV[1] then
  return 0
end
if h[2] == 'done' then
  return 2
end
redis.call('HSET', KEYS[1], 'state', 'done', 'ok', ARGV[2], 'result', ARGV[3], 'error', ARGV[4],
           'done_ms', ARGV[5])
redis.call('ZREM', KEYS[2], ARGV[7])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
return 1
