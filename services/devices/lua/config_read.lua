-- A store's whole register configuration in one atomic read, so that the document a register
-- gets is one version's, never a mix of two.
-- KEYS: 1 cfg:{S}, 2 cfg:{S}:cashiers, 3 cfg:{S}:promos. ARGV: 1 the version the caller has
-- ('' = none).
-- Returns {version} when that is the caller's version, else {version, cfg, cashiers, promos},
-- each of the last three a flat HGETALL (field, value, ...).
local version = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if ARGV[1] ~= '' and tonumber(ARGV[1]) == version then
  return {version}
end
return {version, redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]),
        redis.call('HGETALL', KEYS[3])}
