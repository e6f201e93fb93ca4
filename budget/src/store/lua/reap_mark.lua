-- Declares a silent session dead, atomically against its renewal (presence.lua): once marked,
-- the session can never renew, so it never spends again what is returned for it.
-- KEYS[1]: the presence key, KEYS[2]: the death marker (same hash tag).
-- ARGV[1]: how long the marker is kept (ms).
-- Reply {code, pttl}: {0, ms left} alive; {1, 0} declared dead by this call; {2, 0} already dead.
local left = redis.call('PTTL', KEYS[1])
if left >= 0 or left == -1 then
  return {0, math.max(left, 0)}
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {2, 0}
end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
return {1, 0}
