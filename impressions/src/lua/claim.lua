-- Claims one impression and, on a new claim, counts its cost where a crashed node cannot lose
-- it: the dedup key and the billed-count hash share one hash tag ({iNN}), so this script runs
-- in one slot of a Redis Cluster.
-- KEYS[1] dedup key, KEYS[2] billed-count hash of the auction's reconciliation bucket.
-- ARGV: token, dedup ttl (s), field (LEN:DSPCID), cost (micros), billed-count ttl (s).
-- Returns nil for a new claim, else the token already there (ours again on a retry: the
-- count was made by the first application, never twice).
local prev = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'GET', 'EX', ARGV[2])
if prev then
  return prev
end
redis.call('HINCRBY', KEYS[2], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[5])
return false
