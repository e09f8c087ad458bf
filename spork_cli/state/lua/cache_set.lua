-- Store a cached response, stamped with the server's clock.
-- KEYS[1]  entry hash
-- ARGV[1]  the entry; ARGV[2] ttl in milliseconds
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 't', string.format('%.17g', now), 'v', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
