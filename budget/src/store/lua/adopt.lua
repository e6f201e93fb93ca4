-- The operator's word after a data loss (see identity.rs), for one campaign group: drops the
-- group's campaigns and open reconciliation buckets (their counts belong to the lost data) and
-- writes the stated campaigns of the group. The caller rewrites the catalog, then the
-- identity, and lifts the fence last, so nodes stay fenced until every group is written.
-- KEYS[1]: the group's open-bucket set; then ARGV[1] campaign hashes to drop; then one
-- campaign hash per stated campaign. ARGV[1]: campaigns to drop; then per stated campaign:
-- budget, spent, paused ('0' | '1'), as integer strings, daily budget ('' for none), pacing,
-- zone. Reply: campaigns written.
for _, bucket in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  redis.call('DEL', bucket)
end
redis.call('DEL', KEYS[1])
local drop = tonumber(ARGV[1])
for i = 2, 1 + drop do
  redis.call('DEL', KEYS[i])
end
local n = 0
for i = 2 + drop, #KEYS do
  local a = 2 + (i - 2 - drop) * 6
  redis.call('DEL', KEYS[i])
  redis.call('HSET', KEYS[i], 'budget', ARGV[a], 'spent', ARGV[a + 1], 'held', '0', 'paused', ARGV[a + 2],
    'pacing', ARGV[a + 4], 'tz', ARGV[a + 5])
  if ARGV[a + 3] ~= '' then
    redis.call('HSET', KEYS[i], 'daily', ARGV[a + 3])
  end
  n = n + 1
end
return n
