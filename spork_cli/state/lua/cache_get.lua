-- A cached response and its age; counts the lookup in the route's stats.
-- KEYS[1]  entry hash: t = stored at (server microseconds), v = the entry
-- KEYS[2]  the route's stats hash (same hash tag, so the same slot)
-- ARGV[1]  stats ttl in milliseconds
-- Returns false on a miss, else {entry, age_us}.
local found = redis.call('HMGET', KEYS[1], 't', 'v')
local field = 'misses'
if found[2] then
  field = 'hits'
end
redis.call('HINCRBY', KEYS[2], field, 1)
redis.call('PEXPIRE', KEYS[2], ARGV[1])
if not found[2] then
  return false
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
return {found[2], tostring(math.max(now - tonumber(found[1]), 0))}
