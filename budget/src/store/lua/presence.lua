-- Renews a session's presence, unless the session was declared dead (its leases went back to
-- their campaigns): then it stays dead and the node must start a fresh session.
-- KEYS[1]: the presence key, KEYS[2]: the session's death marker (same hash tag).
-- ARGV[1]: node_ttl_ms. Reply: 1 renewed, 0 declared dead.
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return 1
