-- GCRA: one number per key, the theoretical arrival time (TAT) in microseconds.
-- KEYS[1]  limiter key
-- ARGV[1]  emission interval in microseconds (period / rate)
-- ARGV[2]  capacity (rate + burst): units admitted at once from idle
-- ARGV[3]  cost
-- Returns {allowed, remaining, reset_after_us, retry_after_us}.
local key = KEYS[1]
local emission = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local slack = 1 -- microseconds: absorbs float rounding at the exact boundary

-- A key left by another algorithm (the route's config changed) starts afresh.
local kind = redis.call('TYPE', key)['ok']
if kind ~= 'none' and kind ~= 'string' then
  redis.call('DEL', key)
end

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])

local tat = now
local stored = redis.call('GET', key)
if stored then
  tat = math.max(tonumber(stored), now)
end

local window = capacity * emission
local new_tat = tat + cost * emission
local ahead = new_tat - now
if ahead > window + slack then
  local remaining = math.max(math.floor((window - (tat - now) + slack) / emission), 0)
  return {0, remaining, math.ceil(tat - now), math.ceil(ahead - window)}
end

-- Numbers passed to redis.call are formatted with 14 digits; format the TAT in full.
redis.call('SET', key, string.format('%.17g', new_tat), 'PX', math.max(math.ceil(ahead / 1000), 1))
local remaining = math.max(math.floor((window - ahead + slack) / emission), 0)
return {1, remaining, math.ceil(ahead), 0}
