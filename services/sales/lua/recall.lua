-- Take a parked ticket out, atomically: only one register can recall it, and the same request
-- retried (same request id) gets the same ticket again instead of "not found". The recall is
-- remembered in the parked hash under '~' .. park id (park ids never start with '~') for
-- memo ms, then pruned by a later recall.
-- KEYS: 1 parked hash. ARGV: 1 park id, 2 request id, 3 now (ms), 4 memo (ms).
-- Returns {'ok', entry}, {'again', entry} (a retry) or {'gone', ''}.
local parked, id, req, now, memo = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local tomb = '~' .. id
local t = redis.call('HGET', parked, id)
if not t then
  local old = redis.call('HGET', parked, tomb)
  if old then
    local m = cmsgpack.unpack(old)
    if m.req == req then
      return {'again', m.entry}
    end
  end
  return {'gone', ''}
end
-- the first write is the memo: if Redis refuses it (out of memory), nothing changed
redis.call('HSET', parked, tomb, cmsgpack.pack({req = req, at = now, entry = t}))
redis.call('HDEL', parked, id)
for _, f in ipairs(redis.call('HKEYS', parked)) do
  if string.sub(f, 1, 1) == '~' and f ~= tomb then
    local m = cmsgpack.unpack(redis.call('HGET', parked, f))
    if m.at + memo < now then
      redis.call('HDEL', parked, f)
    end
  end
end
return {'ok', t}
