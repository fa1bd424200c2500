-- Store one response cache entry in its shard, keeping the shard's entries within a byte bound.
--
-- KEYS: entry, index (sorted set: entry key -> expiry, ms on the gateway's clock),
--       sizes (hash: entry key -> its bytes; field "_bytes": the shard's total)
-- ARGV: blob, ttl_ms, expires_ms, now_ms, max_bytes (the shard's bound)
--
-- The three keys share the shard's hash tag: one slot on a cluster, and the entries evicted
-- here are in it too. An entry counts as its blob's bytes plus its key's. Entries whose expiry
-- has passed (Redis dropped them already) are forgotten, a few per call; an entry stored again
-- replaces its old size; then, while the shard would be over its bound, the entries closest to
-- expiry are evicted. An entry larger than the bound is not stored.
--
-- Returns the number of entries evicted, or -1 when the entry was not stored.

local entry, index, sizes = KEYS[1], KEYS[2], KEYS[3]
local size = #ARGV[1] + #entry
local max_bytes = tonumber(ARGV[5])

local function forget(key)
  local bytes = redis.call('HGET', sizes, key)
  if bytes then
    redis.call('HDEL', sizes, key)
    redis.call('HINCRBY', sizes, '_bytes', -tonumber(bytes))
  end
end

for _, key in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', ARGV[4], 'LIMIT', 0, 16)) do
  redis.call('ZREM', index, key)
  forget(key)
end
if redis.call('ZREM', index, entry) == 1 then
  forget(entry)
end
if size > max_bytes then
  redis.call('DEL', entry)
  return -1
end

local total = tonumber(redis.call('HGET', sizes, '_bytes') or '0')
local evicted = 0
while total + size > max_bytes do
  local oldest = redis.call('ZPOPMIN', index)
  if #oldest == 0 then
    total = 0  -- every stored entry is in the index: an empty one holds nothing
    break
  end
  local bytes = tonumber(redis.call('HGET', sizes, oldest[1]) or '0')
  redis.call('HDEL', sizes, oldest[1])
  redis.call('DEL', oldest[1])
  total = total - bytes
  evicted = evicted + 1
end

redis.call('SET', entry, ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', index, ARGV[3], entry)
redis.call('HSET', sizes, entry, size)
redis.call('HSET', sizes, '_bytes', total + size)
return evicted
