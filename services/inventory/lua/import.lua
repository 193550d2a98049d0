-- Apply a batch of validated catalog rows. A row that equals what is stored changes nothing, so
-- importing the same file twice leaves the catalog and its version as they were.
-- KEYS: 1 version, 2 barcode -> sku hash, 3 sku index (sorted set)
-- ARGV: 1 row count, then 11 fields per row:
--   sku barcode name price tax_rate_bp unit category supplier threshold member_price active
local FIELDS = {'sku', 'barcode', 'name', 'price', 'tax_rate_bp', 'unit', 'category', 'supplier',
                'threshold', 'member_price', 'active'}
local n, changed = tonumber(ARGV[1]), 0
local skus = {}
for r = 0, n - 1 do
  local base = 1 + r * 11
  local sku = ARGV[base + 1]
  local key = 'catalog:item:' .. sku
  local old = redis.call('HMGET', key, unpack(FIELDS))
  local differs = false
  for i = 1, 11 do
    if old[i] ~= ARGV[base + i] then differs = true end
  end
  if differs then
    if old[2] and old[2] ~= ARGV[base + 2] and old[2] ~= '' then
      redis.call('HDEL', KEYS[2], old[2])
    end
    local args = {}
    for i = 1, 11 do
      args[#args + 1] = FIELDS[i]
      args[#args + 1] = ARGV[base + i]
    end
    redis.call('HSET', key, unpack(args))
    if ARGV[base + 2] ~= '' then
      redis.call('HSET', KEYS[2], ARGV[base + 2], sku)
    end
    redis.call('ZADD', KEYS[3], 0, sku)
    changed = changed + 1
    skus[#skus + 1] = sku
  end
end
local version = tonumber(redis.call('GET', KEYS[1]) or '0')
if changed > 0 then
  version = redis.call('INCR', KEYS[1])
end
return {changed, version}
