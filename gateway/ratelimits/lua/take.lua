-- Take up to `want` units of a rate limit's shared count for this window, after adding what
-- this process consumed beyond what it had taken (`debt`, tokens only).
-- KEYS[1] the window's count. ARGV: limit, want, debt, ttl_ms.
-- Returns {granted, count after}: granted is 0 when nothing is left.
local limit = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local debt = tonumber(ARGV[3])
local count = tonumber(redis.call('GET', KEYS[1]) or '0') + debt
local granted = 0
if count < limit then
  granted = math.min(want, limit - count)
end
count = count + granted
if granted > 0 or debt > 0 then
  redis.call('SET', KEYS[1], count, 'PX', tonumber(ARGV[4]))
end
return {granted, count}
