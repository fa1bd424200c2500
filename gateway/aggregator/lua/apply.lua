-- Apply one batch of a team's spend stream to its rollups, exactly once, atomically.
--
-- KEYS[1]  the team's spend stream          KEYS[2]  its dead-letter stream
-- KEYS[3..] rollup hashes (all in the team's slot)
-- ARGV: group, consumer, the batch's first and last entry ids (stream order),
--       n_ok, <n_ok entry ids>,
--       n_poison, <n_poison pairs: entry id, reason>,
--       dead-letter approximate maxlen,
--       for each rollup key KEYS[2 + i]: time to live (s; 0: its bucket's life is over),
--       n_fields, <n_fields pairs: field, amount>
--
-- The increments are the batch's sums, so they may be applied only if every entry of the batch
-- is still pending (unacked) in the group. An entry that is not was applied by another consumer
-- (it reclaimed the entry while we were stalled): then nothing is written and the ids are
-- returned, {0, ids}, so the caller re-sums without them and calls again. Otherwise every entry
-- is acked, each poison entry copied to the dead-letter stream, every sum added: {1, n}.
-- One XPENDING lists what the group holds for this consumer between the first and last ids
-- (normally the whole batch); only an entry not among them (another consumer reclaimed it, or
-- the listing was cut short) is looked up on its own. One XACK per 1,000 ids.
-- Amounts stay strings from ARGV to HINCRBY: no Lua number (a double) ever holds money.

local stream, dead = KEYS[1], KEYS[2]
local group, consumer, first, last = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local pos = 5
local n_ok = tonumber(ARGV[pos])
local ok_first = pos + 1
pos = ok_first + n_ok
local n_poison = tonumber(ARGV[pos])
local poison_first = pos + 1
pos = poison_first + 2 * n_poison
local dead_maxlen = ARGV[pos]
pos = pos + 1

local ids = {}
for i = ok_first, ok_first + n_ok - 1 do
  ids[#ids + 1] = ARGV[i]
end
for i = 0, n_poison - 1 do
  ids[#ids + 1] = ARGV[poison_first + 2 * i]
end

local mine = {}
for _, held in ipairs(redis.call('XPENDING', stream, group, first, last, #ids, consumer)) do
  mine[held[1]] = true
end
local stale = {}
for _, id in ipairs(ids) do
  if not mine[id] and #redis.call('XPENDING', stream, group, id, id, 1) == 0 then
    stale[#stale + 1] = id
  end
end
if #stale > 0 then
  return {0, stale}
end

for i = 1, #ids, 1000 do
  redis.call('XACK', stream, group, unpack(ids, i, math.min(i + 999, #ids)))
end
for i = 0, n_poison - 1 do
  local id = ARGV[poison_first + 2 * i]
  local entry = redis.call('XRANGE', stream, id, id)
  local copy = {'XADD', dead, 'MAXLEN', '~', dead_maxlen, '*',
                '_source_id', id, '_error', ARGV[poison_first + 2 * i + 1]}
  if #entry > 0 then
    for _, v in ipairs(entry[1][2]) do
      copy[#copy + 1] = v
    end
  end
  redis.call(unpack(copy))
end

for k = 3, #KEYS do
  local key = KEYS[k]
  local ttl = tonumber(ARGV[pos])
  local n = tonumber(ARGV[pos + 1])
  pos = pos + 2
  if ttl > 0 then
    for j = 0, n - 1 do
      redis.call('HINCRBY', key, ARGV[pos + 2 * j], ARGV[pos + 2 * j + 1])
    end
    redis.call('EXPIRE', key, ttl)
  end
  pos = pos + 2 * n
end

return {1, n_ok + n_poison}
