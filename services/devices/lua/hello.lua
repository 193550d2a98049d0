-- A node announces itself: its row in the node hash and its register in the store's node set.
-- KEYS: 1 node hash, 2 nodes set. ARGV: 1 register, 2 now (ms), 3 version, 4 config version,
-- 5 devices (MessagePack array), 6 serial ports (MessagePack array, or '' when the node sent
-- none: a list left by an earlier start of it is no longer known to be true). Returns 1.
redis.call('HSET', KEYS[1], 'version', ARGV[3], 'config_version', ARGV[4], 'devices', ARGV[5],
           'hello_ms', ARGV[2], 'last_heartbeat_ms', ARGV[2])
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[1], 'ports', ARGV[6])
else
  redis.call('HDEL', KEYS[1], 'ports')
end
redis.call('SADD', KEYS[2], ARGV[1])
return 1
