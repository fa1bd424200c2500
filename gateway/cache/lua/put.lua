-- Store one response cache entry in its shard, keeping the shard's entries within a byte bound.
--
-- KEYS: entry, index (sorted set: entry key -> expiry, ms on the gateway's clock),
--       sizes (hash: entry key -> its bytes; field "_bytes": the shard's total)
-- ARGV: blob, ttl_ms, expires_ms, now_ms, max_bytes (the shard's bound)
--
-- The three keys share the shard's hash tag: one slot on a cluster, and the entries evicted
-- here are in it too. An entry counts as its blob's bytes plus its key's. An entry stored
-- again replaces its old size. While the shard would be over its bound, the entries closest to
-- expiry leave: first those already expired (Redis dropped them; they only stop counting),
-- then live ones, evicted. At most MAX_POPS leave per call, so one call stays short (a large
-- entry arriving in a shard full of small ones would otherwise block the store while it
-- evicted thousands); an entry that still does not fit is not stored this time, and neither is
-- one larger than the bound. Nothing else runs on the common path (a new entry into a shard
-- with room): five commands.
--
-- Returns the number of live entries evicted.

local MAX_POPS = 32
local entry, index, sizes = KEYS[1], KEYS[2], KEYS[3]
local size = #ARGV[1] + #entry
local max_bytes = tonumber(ARGV[5])
local total = tonumber(redis.call('HGET', sizes, '_bytes') or '0')

local old = redis.call('HGET', sizes, entry)
if old then
  redis.call('ZREM', index, entry)
  redis.call('HDEL', sizes, entry)
  total = total - tonumber(old)
end

local now, evicted, pops = tonumber(ARGV[4]), 0, 0
while total + size > max_bytes and size <= max_bytes and pops < MAX_POPS do
  local oldest = redis.call('ZPOPMIN', index)
  if #oldest == 0 then
    total = 0  -- every stored entry is in the index: an empty one holds nothing
    break
  end
  pops = pops + 1
  total = total - tonumber(redis.call('HGET', sizes, oldest[1]) or '0')
  redis.call('HDEL', sizes, oldest[1])
  if tonumber(oldest[2]) > now then
    redis.call('DEL', oldest[1])
    evicted = evicted + 1
  end
end

if total + size > max_bytes then
  redis.call('DEL', entry)  -- its old version, if any, no longer counts
  redis.call('HSET', sizes, '_bytes', total)
  return evicted
end
redis.call('SET', entry, ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', index, ARGV[3], entry)
redis.call('HSET', sizes, entry, size, '_bytes', total + size)
return evicted
