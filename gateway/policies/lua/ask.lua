-- A request over an approval policy's limit: use the principal's approval, or ask for one.
--
-- KEYS: records (hash id -> JSON), current (hash "<key>|<model>|<policy>" -> id), index (zset)
-- ARGV: current field, new id, now_ms, pending_ttl_ms, the new record's JSON (who asked, for
--       what), cost_nano (this request's estimate), retention_ms
--
-- The current approval of that principal, model and policy decides: approved, within its
-- window and its request count -> one use is counted, 'approved'; pending and not expired ->
-- the ask is counted on it (no new approval: repeated asks never flood the list), 'pending';
-- denied within approval_ttl -> 'denied'. Otherwise a new pending approval is recorded under
-- the new id. Records asked longer ago than the retention are dropped as new ones come.
--
-- Returns {status, id, 1 if it was created here else 0}.

local records, current, index = KEYS[1], KEYS[2], KEYS[3]
local field, new_id, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local cost = ARGV[6]

local id = redis.call('HGET', current, field)
if id then
  local raw = redis.call('HGET', records, id)
  if raw then
    local rec = cjson.decode(raw)
    local live = tonumber(rec.expires_ms) > now
    if rec.status == 'approved' and live and (rec.requests < 0 or rec.used < rec.requests) then
      rec.used = rec.used + 1
      rec.last_ms = now
      redis.call('HSET', records, id, cjson.encode(rec))
      return {'approved', id, 0}
    elseif rec.status == 'pending' and live then
      rec.asks = rec.asks + 1
      rec.last_ms = now
      if tonumber(cost) > tonumber(rec.cost_nano) then
        rec.cost_nano = cost
      end
      redis.call('HSET', records, id, cjson.encode(rec))
      return {'pending', id, 0}
    elseif rec.status == 'denied' and live then
      return {'denied', id, 0}
    end
  end
end

local rec = cjson.decode(ARGV[5])
rec.id = new_id
rec.current = field
rec.status = 'pending'
rec.cost_nano = cost
rec.asks = 1
rec.created_ms = now
rec.last_ms = now
rec.expires_ms = now + tonumber(ARGV[4])
rec.requests = -1
rec.used = 0
redis.call('HSET', records, new_id, cjson.encode(rec))
redis.call('HSET', current, field, new_id)
redis.call('ZADD', index, now, new_id)

local old = redis.call('ZRANGEBYSCORE', index, '-inf', now - tonumber(ARGV[7]), 'LIMIT', 0, 100)
for _, old_id in ipairs(old) do
  local old_raw = redis.call('HGET', records, old_id)
  if old_raw then
    local old_field = cjson.decode(old_raw).current
    if redis.call('HGET', current, old_field) == old_id then
      redis.call('HDEL', current, old_field)
    end
    redis.call('HDEL', records, old_id)
  end
  redis.call('ZREM', index, old_id)
end
return {'pending', new_id, 1}
