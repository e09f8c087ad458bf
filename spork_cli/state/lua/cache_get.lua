-- A cached response and its age, unless its URL was invalidated after it was stored.
-- KEYS[1]  entry hash: t = stored at (server microseconds), v = the entry
-- KEYS[2]  the URL's invalidation marker (microseconds; same hash tag, so the same slot)
-- Returns false on a miss, else {entry, age_us}.
local found = redis.call('HMGET', KEYS[1], 't', 'v')
if not found[2] then
  return false
end
local marker = redis.call('GET', KEYS[2])
if marker and tonumber(found[1]) <= tonumber(marker) then
  redis.call('DEL', KEYS[1])
  return false
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
return {found[2], tostring(math.max(now - tonumber(found[1]), 0))}
