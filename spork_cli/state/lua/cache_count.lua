-- Add to a route's cache counters.
-- KEYS[1]  the stats hash; ARGV[1] its ttl in milliseconds; then field, amount pairs
for i = 2, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
