-- Post an external cost to the team's spend stream at most once per idempotency id.
-- KEYS[1] the id's marker, KEYS[2] the team's spend stream (one slot: the team's).
-- ARGV[1] marker value (request digest and event time), ARGV[2] marker TTL (s),
-- ARGV[3..] the event's fields, name and value alternating.
-- Returns nil when posted now, else the marker of the earlier post (the caller compares).
local earlier = redis.call('GET', KEYS[1])
if earlier then
  return earlier
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
return false
