-- An admin's decision on an approval: approve (for a window and optionally a number of
-- requests) or deny.
--
-- KEYS: records, current
-- ARGV: id, 'approved' | 'denied', now_ms, expires_ms, requests (-1: no count), by, note
--
-- Only the current approval of its principal, model and policy can be decided (an older one
-- was superseded by a later ask). Approving again replaces the grant (window and count, uses
-- back to 0); denying an approved one withdraws it. Returns {'missing'}, {'superseded', JSON}
-- or {'ok', JSON} with the record as it now is.

local records, current = KEYS[1], KEYS[2]
local raw = redis.call('HGET', records, ARGV[1])
if not raw then
  return {'missing'}
end
local rec = cjson.decode(raw)
if redis.call('HGET', current, rec.current) ~= ARGV[1] then
  return {'superseded', raw}
end
rec.status = ARGV[2]
rec.decided_ms = tonumber(ARGV[3])
rec.expires_ms = tonumber(ARGV[4])
rec.requests = tonumber(ARGV[5])
rec.used = 0
rec.decided_by = ARGV[6]
rec.note = ARGV[7]
raw = cjson.encode(rec)
redis.call('HSET', records, ARGV[1], raw)
return {'ok', raw}
