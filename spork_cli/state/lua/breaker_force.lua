-- Hold the breaker open or closed on every instance, or clear the hold.
-- (breaker_common.lua is prepended.)
-- KEYS[1]  breaker key
-- ARGV[1]  open | closed | '' (clear)
-- Returns the report of breaker_common.lua, or false when there is no breaker left.
local key = KEYS[1]
local forced = ARGV[1]
local b = load(key)
if not b.exists and forced == '' then
  return false
end
b.forced = forced
save(key, b, nil)
return report(key, b, server_now(), 0)
