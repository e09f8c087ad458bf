-- The stored breaker, unchanged, or nil. (breaker_common.lua is prepended.)
-- KEYS[1]  breaker key
-- Returns the report of breaker_common.lua, or false when there is no breaker.
local key = KEYS[1]
local b = load(key)
if not b.exists then
  return false
end
return report(key, b, server_now(), 0)
