-- Shared by the breaker scripts: registered as a prefix of each breaker_<op>.lua.
-- The breaker hash (times in microseconds of the server clock; absent = zero / none):
--   state        closed | open | half_open
--   failures     consecutive failures (kept while open, cleared on closing)
--   opened_at    when it last opened
--   cooldown     of the current open period
--   probes       half-open: probes admitted in this half-open period
--   probe_ok     half-open: probe successes recorded
--   probe_until  half-open: when unanswered probes are given up and their slots freed
--   forced       open | closed, set by an operator (the key then never expires)
--   trips        trips in a row (the cooldown grows with it)
--   ttl          idle lifetime of the key, from the last policy seen
--   wlen         failure-ratio bucket length; wi<n> ws<n> wf<n>: bucket n's id, successes,
--                failures (n = id % BUCKETS)
local BUCKETS = 10
local RATIO_SLACK = 1e-9
local DEFAULT_TTL = 900000000 -- us: what a force-cleared breaker keeps without a policy

local FIELDS = {'state', 'failures', 'opened_at', 'cooldown', 'probes', 'probe_ok',
  'probe_until', 'forced', 'trips', 'ttl', 'wlen'}
local WINDOW = {}
for n = 0, BUCKETS - 1 do
  WINDOW[#WINDOW + 1] = 'wi' .. n
  WINDOW[#WINDOW + 1] = 'ws' .. n
  WINDOW[#WINDOW + 1] = 'wf' .. n
end

-- Numbers passed to redis.call are formatted with 14 digits; format them in full.
local function num(x)
  return string.format('%.17g', x)
end

local function server_now()
  local clock = redis.call('TIME')
  return tonumber(clock[1]) * 1000000 + tonumber(clock[2])
end

local function load(key)
  local v = redis.call('HMGET', key, unpack(FIELDS))
  local exists = false
  for i = 1, #FIELDS do
    if v[i] then exists = true end
  end
  return {
    exists = exists,
    state = v[1] or 'closed',
    failures = tonumber(v[2]) or 0,
    opened_at = tonumber(v[3]) or 0,
    cooldown = tonumber(v[4]) or 0,
    probes = tonumber(v[5]) or 0,
    probe_ok = tonumber(v[6]) or 0,
    probe_until = tonumber(v[7]) or 0,
    forced = v[8] or '',
    trips = tonumber(v[9]) or 0,
    ttl = tonumber(v[10]) or 0,
    wlen = tonumber(v[11]) or 0,
  }
end

-- {requests, failures} over the live buckets of the window
local function window_counts(key, b, now)
  if b.wlen <= 0 then return 0, 0 end
  local current = math.floor(now / b.wlen)
  local w = redis.call('HMGET', key, unpack(WINDOW))
  local requests, failed = 0, 0
  for n = 0, BUCKETS - 1 do
    local id = tonumber(w[3 * n + 1])
    if id and id > current - BUCKETS then
      local ok, bad = tonumber(w[3 * n + 2]) or 0, tonumber(w[3 * n + 3]) or 0
      requests = requests + ok + bad
      failed = failed + bad
    end
  end
  return requests, failed
end

local function clear_window(key, b)
  redis.call('HDEL', key, 'wlen', unpack(WINDOW))
  b.wlen = 0
end

-- Writes the scalar fields and sets the key's lifetime (none while forced).
local function save(key, b, ttl)
  if ttl and ttl > 0 then b.ttl = ttl end
  if b.ttl <= 0 then b.ttl = DEFAULT_TTL end
  redis.call('HSET', key, 'state', b.state, 'failures', b.failures,
    'opened_at', num(b.opened_at), 'cooldown', num(b.cooldown), 'probes', b.probes,
    'probe_ok', b.probe_ok, 'probe_until', num(b.probe_until), 'trips', b.trips,
    'ttl', num(b.ttl))
  if b.forced ~= '' then
    redis.call('HSET', key, 'forced', b.forced)
    redis.call('PERSIST', key)
  else
    redis.call('HDEL', key, 'forced')
    redis.call('PEXPIRE', key, math.max(math.ceil(b.ttl / 1000), 1))
  end
end

-- {state, failures, window_requests, window_failures, opened_at, cooldown, next_probe_at,
--  forced, trips, probes, changed}; absent times are -1
local function report(key, b, now, changed)
  local requests, failed = window_counts(key, b, now)
  local state = b.state
  if b.forced ~= '' then state = b.forced end
  local next_probe = -1
  if b.forced == '' and b.state == 'open' then
    next_probe = b.opened_at + b.cooldown
  elseif b.forced == '' and b.state == 'half_open' then
    next_probe = b.probe_until
  end
  local opened = -1
  if state ~= 'closed' and b.opened_at > 0 then opened = b.opened_at end
  local probes = 0
  if state == 'half_open' then probes = b.probes end
  return {state, b.failures, requests, failed, opened, b.cooldown, next_probe, b.forced,
    b.trips, probes, changed}
end
