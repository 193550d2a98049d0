-- Apply a batch of validated catalog rows. A row that equals what is stored changes nothing, so
-- importing the same file twice leaves the catalog and its version as they were. The field names
-- come from the caller (the one list of catalog item fields is in inventory.c); the first two
-- are the SKU and the barcode.
-- KEYS: 1 version, 2 barcode -> sku hash, 3 sku index (sorted set)
-- ARGV: 1 row count, 2 field count F, 3 .. F + 2 the field names, then per row: the item's hash
--       key and its F values
-- Returns {changed rows, catalog version}
local n, nf = tonumber(ARGV[1]), tonumber(ARGV[2])
local fields = {}
for i = 1, nf do
  fields[i] = ARGV[2 + i]
end
local changed = 0
for r = 0, n - 1 do
  local base = 3 + nf + r * (nf + 1)
  local key, sku, barcode = ARGV[base], ARGV[base + 1], ARGV[base + 2]
  local old = redis.call('HMGET', key, unpack(fields))
  local differs = false
  for i = 1, nf do
    if old[i] ~= ARGV[base + i] then differs = true end
  end
  if differs then
    if old[2] and old[2] ~= barcode and old[2] ~= '' then
      redis.call('HDEL', KEYS[2], old[2])
    end
    local args = {}
    for i = 1, nf do
      args[#args + 1] = fields[i]
      args[#args + 1] = ARGV[base + i]
    end
    redis.call('HSET', key, unpack(args))
    if barcode ~= '' then
      redis.call('HSET', KEYS[2], barcode, sku)
    end
    redis.call('ZADD', KEYS[3], 0, sku)
    changed = changed + 1
  end
end
local version = tonumber(redis.call('GET', KEYS[1]) or '0')
if changed > 0 then
  version = redis.call('INCR', KEYS[1])
end
return {changed, version}
