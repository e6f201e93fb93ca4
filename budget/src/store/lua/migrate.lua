-- One-time move of a store written before hash tags (campaign hashes `P:dsp:cid`) to the
-- grouped layout, on a single Redis (it renames keys across slots, which a cluster refuses).
-- Atomic: a node starting at the same time finds the old catalog gone and does nothing.
-- The sessions found in the campaigns are listed as nodes: their processes must be stopped
-- before the upgrade, so their presence keys never appear and the live nodes return their
-- leases (see reap.lua).
-- KEYS[1] old catalog, KEYS[2] old open-bucket set, KEYS[3] catalog, KEYS[4] node set,
-- KEYS[5] set of groups with open buckets, KEYS[6] old bucket-size key; then per campaign:
-- old hash, new hash; then per bucket: old hash, new hash, new campaign hash, the group's
-- open-bucket set, the group's bucket-size key.
-- ARGV[1]: campaigns, ARGV[2]: buckets; then per bucket: start, open ('1' | '0'), group.
-- Reply: campaigns moved, or -1 when another node migrated first.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
local nc = tonumber(ARGV[1])
local nb = tonumber(ARGV[2])
local size = redis.call('GET', KEYS[6])
local sessions = {}
local moved = 0
for i = 1, nc do
  local old = KEYS[5 + 2 * i]
  local new = KEYS[6 + 2 * i]
  if redis.call('EXISTS', old) == 1 then
    for _, f in ipairs(redis.call('HKEYS', old)) do
      local s = string.match(f, '^node:(.*):granted$')
      if s then sessions[s] = true end
    end
    redis.call('RENAME', old, new)
    redis.call('SADD', KEYS[3], new)
    moved = moved + 1
  end
end
local base = 6 + 2 * nc
for j = 1, nb do
  local k = base + 5 * (j - 1)
  local a = 3 + 3 * (j - 1)
  if redis.call('EXISTS', KEYS[k + 1]) == 1 then
    redis.call('RENAME', KEYS[k + 1], KEYS[k + 2])
    redis.call('HSET', KEYS[k + 2], 'c', KEYS[k + 3])
    if ARGV[a + 1] == '1' then
      redis.call('ZADD', KEYS[k + 4], ARGV[a], KEYS[k + 2])
      redis.call('SADD', KEYS[5], ARGV[a + 2])
    end
    if size then
      redis.call('SET', KEYS[k + 5], size)
    end
  end
end
for s, _ in pairs(sessions) do
  redis.call('SADD', KEYS[4], s)
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[6])
return moved
