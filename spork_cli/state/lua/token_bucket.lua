-- Token bucket: a hash per key, {tokens, ts} (ts in microseconds), refilled continuously.
-- KEYS[1]  limiter key
-- ARGV[1]  microseconds per token (period / rate)
-- ARGV[2]  capacity (rate + burst)
-- ARGV[3]  cost
-- Returns {allowed, remaining, reset_after_us, retry_after_us}.
local key = KEYS[1]
local per_token = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local slack = 1 / per_token -- one microsecond's worth of tokens

-- A key left by another algorithm (the route's config changed) starts afresh.
local kind = redis.call('TYPE', key)['ok']
if kind ~= 'none' and kind ~= 'hash' then
  redis.call('DEL', key)
end

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])

local tokens = capacity
local stamp = now
local state = redis.call('HMGET', key, 'tokens', 'ts')
if state[1] and state[2] then
  tokens = tonumber(state[1])
  stamp = tonumber(state[2])
  if now > stamp then
    tokens = math.min(capacity, tokens + (now - stamp) / per_token)
    stamp = now
  end
end

if tokens + slack < cost then
  local remaining = math.max(math.floor(tokens + slack), 0)
  local reset = (capacity - tokens) * per_token
  return {0, remaining, math.ceil(reset), math.ceil((cost - tokens) * per_token)}
end

tokens = tokens - cost
local reset = (capacity - tokens) * per_token
redis.call('HSET', key, 'tokens', string.format('%.17g', tokens),
  'ts', string.format('%.17g', stamp))
redis.call('PEXPIRE', key, math.max(math.ceil(reset / 1000), 1))
return {1, math.max(math.floor(tokens + slack), 0), math.ceil(reset), 0}
