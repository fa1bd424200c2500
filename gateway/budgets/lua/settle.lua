-- Settle one request to its actual cost and append its spend event, atomically, once per event.
--
-- KEYS: counter_1 .. counter_n, reservation, deadlines, settled (the event hour's id set),
--       stream (the team's spend stream), alerted_1 .. alerted_n
-- ARGV: request_id, event_id, cost_nano, tokens, settled_ttl_s,
--       then 4 per budget i: limit_nano (-1: none), limit_tokens (-1: none),
--       thresholds (percents, comma-separated, may be empty), counter_ttl_ms (-1: never),
--       then the event's fields as one JSON array of strings [name, value, name, value, ...]
--       (one argument instead of ~50: the client packs arguments one by one, slowly)
--
-- An event id already in the settled set changes nothing (spool replays and retried settles
-- count once). The reservation, if still held, is given back as recorded; if the deadline sweep
-- already released it, it is not given back twice. A threshold is reported once per budget
-- period: the first settle that finds spend at or over it adds it to the alerted set. The
-- stream is never trimmed here: the aggregator trims after archiving.
--
-- Returns {0} for a duplicate, else {1, stream_id, released (1: the reservation was still
-- held), {spent_nano, reserved_nano, spent_tokens, reserved_tokens per budget},
-- {budget_index, threshold, ...} (thresholds newly reached)}.

local n = (#KEYS - 4) / 2
local res_key = KEYS[n + 1]
local dl_key = KEYS[n + 2]
local settled_key = KEYS[n + 3]
local stream_key = KEYS[n + 4]
local request_id = ARGV[1]
local event_id = ARGV[2]
local cost = ARGV[3]
local tokens = ARGV[4]

if redis.call('SISMEMBER', settled_key, event_id) == 1 then
  return {0}
end

local function incr(counter, field, amount, sign)
  if amount ~= '0' then
    redis.call('HINCRBY', counter, field, sign .. amount)
  end
end

local released = 0
local held = redis.call('HGETALL', res_key)
for j = 1, #held, 2 do
  local nano, tok = string.match(held[j + 1], '^(%d+):(%d+)$')
  if nano and redis.call('EXISTS', held[j]) == 1 then
    incr(held[j], 'reserved_nano', nano, '-')
    incr(held[j], 'reserved_tokens', tok, '-')
  end
  released = 1
end
if released == 1 then
  redis.call('DEL', res_key)
end
redis.call('ZREM', dl_key, request_id)

local stats = {}
local crossed = {}
for i = 1, n do
  local counter = KEYS[i]
  local base = 5 + (i - 1) * 4
  incr(counter, 'spent_nano', cost, '')
  incr(counter, 'spent_tokens', tokens, '')
  local ttl = ARGV[base + 4]
  if ttl ~= '-1' then
    redis.call('PEXPIRE', counter, ttl)
  end
  local v = redis.call('HMGET', counter, 'spent_nano', 'reserved_nano', 'spent_tokens',
    'reserved_tokens')
  local spent_nano, spent_tokens = tonumber(v[1]) or 0, tonumber(v[3]) or 0
  stats[#stats + 1] = spent_nano
  stats[#stats + 1] = tonumber(v[2]) or 0
  stats[#stats + 1] = spent_tokens
  stats[#stats + 1] = tonumber(v[4]) or 0

  local limit_nano = tonumber(ARGV[base + 1])
  local limit_tokens = tonumber(ARGV[base + 2])
  local alerted = KEYS[n + 4 + i]
  local touched = false
  for t in string.gmatch(ARGV[base + 3], '%d+') do
    local pct = tonumber(t)
    local reached = (limit_nano >= 0 and spent_nano > 0 and spent_nano * 100 >= pct * limit_nano)
      or (limit_tokens >= 0 and spent_tokens > 0 and spent_tokens * 100 >= pct * limit_tokens)
    if reached and redis.call('SADD', alerted, t) == 1 then
      crossed[#crossed + 1] = i
      crossed[#crossed + 1] = pct
      touched = true
    end
  end
  if touched and ttl ~= '-1' then
    redis.call('PEXPIRE', alerted, ttl)
  end
end

redis.call('SADD', settled_key, event_id)
redis.call('EXPIRE', settled_key, ARGV[5])
local fields = cjson.decode(ARGV[6 + n * 4])
local stream_id = redis.call('XADD', stream_key, '*', unpack(fields))
return {1, stream_id, released, stats, crossed}
