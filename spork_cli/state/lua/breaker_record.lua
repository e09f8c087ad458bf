-- Count one outcome: trips, re-opens or closes the breaker. (breaker_common.lua is prepended.)
-- KEYS[1]  breaker key
-- ARGV[1]  success (1) or failure (0)
-- ARGV[2]  1 when the request was admitted as a half-open probe
-- ARGV[3]  consecutive failures that trip it
-- ARGV[4]  failure ratio (0 < r <= 1), or 0 for none
-- ARGV[5]  bucket length of the ratio window in microseconds (window / BUCKETS)
-- ARGV[6]  min_requests in the window before the ratio counts
-- ARGV[7]  cooldown in microseconds, ARGV[8] its cap, ARGV[9] its multiplier per trip
-- ARGV[10] half_open_probes
-- ARGV[11] idle lifetime of the key in microseconds
-- Returns the report of breaker_common.lua.
local key = KEYS[1]
local success = ARGV[1] == '1'
local probe = ARGV[2] == '1'
local max_failures = tonumber(ARGV[3])
local ratio = tonumber(ARGV[4])
local wlen = tonumber(ARGV[5])
local min_requests = tonumber(ARGV[6])
local base = tonumber(ARGV[7])
local cap = tonumber(ARGV[8])
local multiplier = tonumber(ARGV[9])
local limit = tonumber(ARGV[10])
local ttl = tonumber(ARGV[11])

local now = server_now()
local b = load(key)
if b.forced ~= '' then
  return report(key, b, now, 0) -- held by an operator: nothing counts
end

local function trip()
  b.trips = b.trips + 1
  b.state = 'open'
  b.opened_at = now
  b.cooldown = math.min(base * multiplier ^ (b.trips - 1), cap)
  b.probes = 0
  b.probe_ok = 0
  b.probe_until = 0
end

local changed = 0
if b.state == 'closed' then
  if success then
    b.failures = 0
  else
    b.failures = b.failures + 1
  end
  local tripped = (not success) and b.failures >= max_failures
  if ratio > 0 then
    if b.wlen ~= wlen then
      clear_window(key, b)
      b.wlen = wlen
      redis.call('HSET', key, 'wlen', num(wlen))
    end
    local current = math.floor(now / wlen)
    local n = current % BUCKETS
    local id = tonumber(redis.call('HGET', key, 'wi' .. n))
    if id ~= current then
      redis.call('HSET', key, 'wi' .. n, num(current), 'ws' .. n, 0, 'wf' .. n, 0)
    end
    if success then
      redis.call('HINCRBY', key, 'ws' .. n, 1)
    else
      redis.call('HINCRBY', key, 'wf' .. n, 1)
    end
    local requests, failed = window_counts(key, b, now)
    if (not success) and requests >= min_requests
        and failed >= ratio * requests - RATIO_SLACK then
      tripped = true
    end
  end
  if tripped then
    trip()
    changed = 1
  end
elseif b.state == 'half_open' and probe then
  if not success then
    trip()
    changed = 1
  else
    b.probe_ok = b.probe_ok + 1
    if b.probe_ok >= limit then
      b.state = 'closed'
      b.failures = 0
      b.opened_at = 0
      b.cooldown = 0
      b.probes = 0
      b.probe_ok = 0
      b.probe_until = 0
      b.trips = 0
      clear_window(key, b)
      changed = 1
    end
  end
else
  -- open, or an outcome of a request admitted before the breaker opened: ignored
  return report(key, b, now, 0)
end
save(key, b, ttl)
return report(key, b, now, changed)
