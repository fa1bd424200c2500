-- Delete a consumer from the group only if it has nothing pending, atomically: deleting a
-- consumer drops its pending entries from the group, which would lose those events.
-- KEYS[1] stream; ARGV[1] group, ARGV[2] consumer. Returns 1 if deleted.
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then
  return 0
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
