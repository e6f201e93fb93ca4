-- The operator's word after a data loss (see identity.rs): replaces every campaign by the
-- stated ones, drops the open reconciliation buckets (their counts belong to the lost data),
-- sets the identity and lifts the fence, in one step.
-- KEYS[1]: identity, KEYS[2]: fence, KEYS[3]: campaign set, KEYS[4]: open buckets; then one
-- campaign hash per stated campaign. ARGV[1]: the new identity; then per campaign: budget,
-- spent, paused ('0' | '1'), as integer strings, daily budget ('' for none), pacing, zone.
-- Reply: campaigns written.
for _, key in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  redis.call('DEL', key)
end
redis.call('DEL', KEYS[3])
for _, bucket in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
  redis.call('DEL', bucket)
end
redis.call('DEL', KEYS[4])
local n = 0
for i = 5, #KEYS do
  local a = 2 + (i - 5) * 6
  redis.call('DEL', KEYS[i])
  redis.call('HSET', KEYS[i], 'budget', ARGV[a], 'spent', ARGV[a + 1], 'held', '0', 'paused', ARGV[a + 2],
    'pacing', ARGV[a + 4], 'tz', ARGV[a + 5])
  if ARGV[a + 3] ~= '' then
    redis.call('HSET', KEYS[i], 'daily', ARGV[a + 3])
  end
  redis.call('SADD', KEYS[3], KEYS[i])
  n = n + 1
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return n
