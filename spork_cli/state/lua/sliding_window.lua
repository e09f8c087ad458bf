-- Sliding window log: a sorted set per key, one member per admitted unit, scored by its
-- admission time in microseconds. An admission at time s counts while s > now - period
-- (less 1 µs of tolerance).
-- KEYS[1]  limiter key
-- ARGV[1]  period in microseconds
-- ARGV[2]  capacity (rate)
-- ARGV[3]  cost
-- Returns {allowed, remaining, reset_after_us, retry_after_us}.
local key = KEYS[1]
local period = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])

-- A key left by another algorithm (the route's config changed) starts afresh.
local kind = redis.call('TYPE', key)['ok']
if kind ~= 'none' and kind ~= 'zset' then
  redis.call('DEL', key)
end

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])

-- Numbers passed to redis.call are formatted with 14 digits; format times in full.
local slack = 1 -- microseconds: absorbs float rounding at the exact boundary
redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%.17g', now - period + slack))
local count = redis.call('ZCARD', key)

if count + cost > capacity then
  local need = count + cost - capacity -- admissions that must leave the window first
  local first = redis.call('ZRANGE', key, need - 1, need - 1, 'WITHSCORES')
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  local retry = tonumber(first[2]) + period - now
  local reset = tonumber(last[2]) + period - now
  return {0, math.max(capacity - count, 0), math.ceil(reset), math.ceil(retry)}
end

-- Members are unique: within one microsecond the count only grows.
local stamp = string.format('%.17g', now)
for i = 1, cost do
  redis.call('ZADD', key, stamp, stamp .. ':' .. (count + i))
end
redis.call('PEXPIRE', key, math.max(math.ceil(period / 1000), 1))
return {1, capacity - count - cost, math.ceil(period), 0}
