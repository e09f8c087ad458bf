-- Invalidate every entry of one URL stored until now (the server's clock, as entries are).
-- KEYS[1]  the URL's marker; ARGV[1] its ttl in milliseconds
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
redis.call('SET', KEYS[1], string.format('%.17g', now), 'PX', ARGV[1])
return 1
