-- Apply a batch of sales to the day aggregates, each sale once. The service has already summed
-- the increments of the whole batch per key and field; this script only makes it atomic and
-- idempotent: if any sale of the batch was applied before (a redelivery after a crash before
-- XACK), nothing is written and the indexes of those sales are returned, so the service can
-- leave them out and try again; otherwise every sale is marked and every increment applied.
-- ARGV: n, n sale hash keys, m, m x (key, field, delta), k, k x (key, register, min seq, max seq),
--       d, d x (days set key, day)
local pos = 1
local function take()
  local v = ARGV[pos]
  pos = pos + 1
  return v
end
local n = tonumber(take())
local sales = {}
for i = 1, n do sales[i] = take() end
local done = {}
for i = 1, n do
  if redis.call('HEXISTS', sales[i], 'reporting') == 1 then done[#done + 1] = i - 1 end
end
if #done > 0 then
  return {'applied', done}
end
for i = 1, n do redis.call('HSET', sales[i], 'reporting', 1) end
local m = tonumber(take())
for _ = 1, m do
  redis.call('HINCRBY', take(), take(), take())
end
local k = tonumber(take())
for _ = 1, k do
  local key, reg, lo, hi = take(), take(), tonumber(take()), tonumber(take())
  local first = tonumber(redis.call('HGET', key, reg .. ':first') or '0')
  if first == 0 or lo < first then redis.call('HSET', key, reg .. ':first', lo) end
  local last = tonumber(redis.call('HGET', key, reg .. ':last') or '0')
  if hi > last then redis.call('HSET', key, reg .. ':last', hi) end
end
local d = tonumber(take())
for _ = 1, d do
  redis.call('SADD', take(), take())
end
return {'ok', n}
