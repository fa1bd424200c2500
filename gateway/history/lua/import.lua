-- Append imported spend events to the team's stream, each at most once by event id.
-- KEYS[1] the set of event ids imported for one (team, UTC day), KEYS[2] the team's stream
-- (both in the team's slot).
-- ARGV[1] the set's TTL (s), ARGV[2] "1" for a dry run (count, change nothing), then per event:
-- its id, its number of fields n, and n name/value pairs.
-- Returns one flag per event: 1 if it was new (appended, or would be), 0 if imported before.
local ttl, dry = tonumber(ARGV[1]), ARGV[2] == '1'
local i, new, flags = 3, 0, {}
while i <= #ARGV do
  local id, n = ARGV[i], tonumber(ARGV[i + 1])
  local first = i + 2
  local last = first + 2 * n - 1
  local fresh
  if dry then
    fresh = redis.call('SISMEMBER', KEYS[1], id) == 0
  else
    fresh = redis.call('SADD', KEYS[1], id) == 1
  end
  flags[#flags + 1] = fresh and 1 or 0
  if fresh then
    new = new + 1
    if not dry then
      redis.call('XADD', KEYS[2], '*', unpack(ARGV, first, last))
    end
  end
  i = last + 1
end
if not dry and new > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
end
return flags
