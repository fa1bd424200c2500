-- Reserve the worst-case cost of one request against every budget that applies, atomically.
-- First releases the team's reservations whose deadline passed (a crashed replica never settles).
--
-- KEYS: counter_1 .. counter_n, reservation (this request), deadlines (the team's zset)
-- ARGV: request_id, now_ms, deadline_ms, amount_nano, amount_tokens, reservation_ttl_ms,
--       then 4 per budget i: limit_nano (-1: none), limit_tokens (-1: none),
--       mode ("block" | "downgrade" | "alert"), counter_ttl_ms (-1: never)
-- then 3 for a lease (see gateway/budgets/leases.py): lease_divisor (0: an ordinary request),
--       min_nano, min_tokens.
-- With n = 0 it only releases expired reservations, and then the reservation of request_id if
-- one is given (how a lease is given back).
--
-- A lease reserves, instead of ARGV's amounts, 1/lease_divisor of what the tightest budget has
-- left (USD and tokens apart; 0 for a kind no budget limits), and only if that is at least
-- min_nano / min_tokens: otherwise nothing is reserved (status 0, failed_index 0).
--
-- Amounts travel as decimal strings and reach HINCRBY as strings (64-bit exact in Redis); the
-- comparisons use Lua numbers (doubles), exact up to 2^53, i.e. ~9 million USD in nano-USD
-- per counter. Every key is in the team's hash slot; a reservation of another request is found
-- by replacing this request's id at the end of KEYS[n + 1] (same prefix, same slot).
--
-- Returns {status, failed_index, released, then per budget: spent_nano, reserved_nano,
-- spent_tokens, reserved_tokens (after this call), and for a lease: amount_nano,
-- amount_tokens}. status 1: reserved; 0: refused, nothing
-- reserved (failed_index: the first failing "block" budget, else the first "downgrade" one);
-- 2: this request id already holds a reservation (a retried call whose reply was lost):
-- nothing changed.

local n = #KEYS - 2
local res_key = KEYS[n + 1]
local dl_key = KEYS[n + 2]
local request_id = ARGV[1]
local SWEEP_BATCH = 100

local function incr(counter, field, amount, sign)
  if amount ~= '0' then
    redis.call('HINCRBY', counter, field, sign .. amount)
  end
end

-- Give back what a reservation holds. A counter that expired meanwhile is not recreated.
local function release(key)
  local held = redis.call('HGETALL', key)
  for j = 1, #held, 2 do
    local nano, tokens = string.match(held[j + 1], '^(%d+):(%d+)$')
    if nano and redis.call('EXISTS', held[j]) == 1 then
      incr(held[j], 'reserved_nano', nano, '-')
      incr(held[j], 'reserved_tokens', tokens, '-')
    end
  end
  redis.call('DEL', key)
end

local prefix = string.sub(res_key, 1, #res_key - #request_id)
local expired = redis.call('ZRANGEBYSCORE', dl_key, '-inf', ARGV[2], 'LIMIT', 0, SWEEP_BATCH)
for _, rid in ipairs(expired) do
  release(prefix .. rid)
  redis.call('ZREM', dl_key, rid)
end

local result = {1, 0, #expired}
if n == 0 then
  if request_id ~= '' then
    release(res_key)
    redis.call('ZREM', dl_key, request_id)
  end
  return result
end

local stats = {}
for i = 1, n do
  local v = redis.call('HMGET', KEYS[i], 'spent_nano', 'reserved_nano', 'spent_tokens',
    'reserved_tokens')
  stats[i] = {tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or 0, tonumber(v[4]) or 0}
end

local function reply(status, failed)
  result[1] = status
  result[2] = failed
  for i = 1, n do
    for k = 1, 4 do
      result[#result + 1] = stats[i][k]
    end
  end
  return result
end

if redis.call('EXISTS', res_key) == 1 then
  return reply(2, 0)
end

local amount_nano = tonumber(ARGV[4])
local amount_tokens = tonumber(ARGV[5])
local nano_arg, tokens_arg = ARGV[4], ARGV[5]
local lease_at = 7 + n * 4
local divisor = tonumber(ARGV[lease_at] or '0')
if divisor > 0 then
  local nano, tokens
  for i = 1, n do
    local base = 6 + (i - 1) * 4
    local limit_nano = tonumber(ARGV[base + 1])
    local limit_tokens = tonumber(ARGV[base + 2])
    local s = stats[i]
    if limit_nano >= 0 then
      local share = math.floor((limit_nano - s[1] - s[2]) / divisor)
      nano = (nano == nil or share < nano) and share or nano
    end
    if limit_tokens >= 0 then
      local share = math.floor((limit_tokens - s[3] - s[4]) / divisor)
      tokens = (tokens == nil or share < tokens) and share or tokens
    end
  end
  if (nano ~= nil and nano < tonumber(ARGV[lease_at + 1]))
      or (tokens ~= nil and tokens < tonumber(ARGV[lease_at + 2])) then
    return reply(0, 0)
  end
  amount_nano, amount_tokens = nano or 0, tokens or 0
  nano_arg = string.format('%.0f', amount_nano)
  tokens_arg = string.format('%.0f', amount_tokens)
end
local failed, failed_rank = 0, 0
for i = 1, n do
  local base = 6 + (i - 1) * 4
  local mode = ARGV[base + 3]
  if mode ~= 'alert' then
    local limit_nano = tonumber(ARGV[base + 1])
    local limit_tokens = tonumber(ARGV[base + 2])
    local s = stats[i]
    local over = (limit_nano >= 0 and s[1] + s[2] + amount_nano > limit_nano)
      or (limit_tokens >= 0 and s[3] + s[4] + amount_tokens > limit_tokens)
    if over then
      local rank = (mode == 'block') and 2 or 1
      if rank > failed_rank then
        failed, failed_rank = i, rank
      end
    end
  end
end
if failed > 0 then
  return reply(0, failed)
end

local held = nano_arg .. ':' .. tokens_arg
for i = 1, n do
  local counter = KEYS[i]
  incr(counter, 'reserved_nano', nano_arg, '')
  incr(counter, 'reserved_tokens', tokens_arg, '')
  local ttl = ARGV[6 + (i - 1) * 4 + 4]
  if ttl ~= '-1' then
    redis.call('PEXPIRE', counter, ttl)
  end
  redis.call('HSET', res_key, counter, held)
  stats[i][2] = stats[i][2] + amount_nano
  stats[i][4] = stats[i][4] + amount_tokens
end
redis.call('PEXPIRE', res_key, ARGV[6])
redis.call('ZADD', dl_key, ARGV[3], request_id)
reply(1, 0)
if divisor > 0 then
  result[#result + 1] = nano_arg
  result[#result + 1] = tokens_arg
end
return result
