-- Renew (ARGV[2] = ttl ms) or release (no ARGV[2]) a lease, only if we still hold it.
-- KEYS[1] lease key; ARGV[1] our token. Returns 1 if we held it.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[2] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  redis.call('DEL', KEYS[1])
end
return 1
