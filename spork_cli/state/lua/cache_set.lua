-- Store a cached response, stamped with the server's clock; counts the store.
-- KEYS[1]  entry hash; KEYS[2] the route's stats hash (same slot)
-- ARGV[1]  the entry; ARGV[2] ttl in milliseconds; ARGV[3] stats ttl in milliseconds
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 't', string.format('%.17g', now), 'v', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('HINCRBY', KEYS[2], 'stores', 1)
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
