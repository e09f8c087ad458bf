-- May a request pass the breaker now? (breaker_common.lua is prepended.)
-- KEYS[1]  breaker key
-- ARGV[1]  half_open_probes
-- ARGV[2]  cooldown in microseconds (the retry hint while forced open)
-- ARGV[3]  idle lifetime of the key in microseconds
-- Returns {state, allowed, retry_after_us, probe, changed, failures}.
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local hint = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])

local b = load(key)
if not b.exists then
  return {'closed', 1, 0, 0, 0, 0}
end
if b.forced == 'open' then
  return {'open', 0, hint, 0, 0, b.failures}
end
if b.forced == 'closed' or b.state == 'closed' then
  return {'closed', 1, 0, 0, 0, b.failures}
end

local now = server_now()
local changed = 0
if b.state == 'open' then
  local reopen_at = b.opened_at + b.cooldown
  if now < reopen_at then
    return {'open', 0, math.ceil(reopen_at - now), 0, 0, b.failures}
  end
  b.state = 'half_open'
  b.probes = 0
  b.probe_ok = 0
  b.probe_until = 0
  changed = 1
end

if b.probes >= limit and b.probe_ok < limit and now >= b.probe_until then
  b.probes = b.probe_ok -- unanswered probes are given up: their slots free
end
if b.probes < limit then
  b.probes = b.probes + 1
  b.probe_until = now + b.cooldown
  save(key, b, ttl)
  return {'half_open', 1, 0, 1, changed, b.failures}
end
return {'half_open', 0, math.max(math.ceil(b.probe_until - now), 0), 0, changed, b.failures}
