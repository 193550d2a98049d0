-- A node's heartbeat, and whether to ask it to resend sales that sales has not committed.
-- KEYS: 1 node hash, 2 nodes set, 3 regseq hash (sales': register -> highest sequence with
-- every sequence below it committed; read only), 4 the store's configuration hash cfg:{S}
-- (read only: its version, so a node that missed config.<S>.changed still converges), 5 the
-- register's pending device commands devcmds:{S}:<register> (read only: how many wait).
-- ARGV: 1 register, 2 now (ms), 3 last_seq, 4 unsynced, 5 config version, 6 devices
-- (MessagePack array, or '' to keep the stored ones), 7 resend interval (ms), 8 serial ports
-- (MessagePack array, or '' to keep the stored ones: a node sends them only when they changed).
-- Returns {status, committed, from, to, config version, pending commands}: status 0 nothing
-- missing, 1 missing but asked less than the interval ago, 2 ask for from..to now
-- (resend_asked_ms is set in the same step, so two instances never both ask within the
-- interval).
local now = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'last_heartbeat_ms', ARGV[2], 'last_seq', ARGV[3],
           'unsynced', ARGV[4], 'config_version', ARGV[5])
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[1], 'devices', ARGV[6])
end
if ARGV[8] ~= '' then
  redis.call('HSET', KEYS[1], 'ports', ARGV[8])
end
redis.call('SADD', KEYS[2], ARGV[1])
local committed = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
local cfgv = tonumber(redis.call('HGET', KEYS[4], 'version') or '0')
local pending = redis.call('ZCARD', KEYS[5])
-- what the node holds as acknowledged: sales it has not uploaded yet are not missing, they
-- are on their way (asking for them would only send them twice)
local last = tonumber(ARGV[3]) - tonumber(ARGV[4])
if last <= committed then
  return {0, committed, 0, 0, cfgv, pending}
end
local asked = tonumber(redis.call('HGET', KEYS[1], 'resend_asked_ms') or '0')
if asked and now - asked < tonumber(ARGV[7]) and now >= asked then
  return {1, committed, 0, 0, cfgv, pending}
end
redis.call('HSET', KEYS[1], 'resend_asked_ms', ARGV[2])
return {2, committed, committed + 1, last, cfgv, pending}
