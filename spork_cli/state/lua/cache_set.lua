-- Store a cached response, stamped with the server's clock, unless its URL was invalidated
-- after the request that brought it went upstream (that answer is already out of date).
-- KEYS[1]  entry hash; KEYS[2] the URL's invalidation marker (same hash tag, same slot)
-- ARGV[1]  the entry; ARGV[2] ttl in milliseconds; ARGV[3] microseconds since it was asked
-- Returns 1 when stored, 0 when not.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local marker = redis.call('GET', KEYS[2])
if marker and tonumber(marker) >= now - tonumber(ARGV[3]) then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 't', string.format('%.17g', now), 'v', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
