-- Returns a dead session's unspent leases to their campaigns, for every campaign of one group
-- (reclaim.lua's rule, per key). Exactly once: the held part is moved to `returned` and the
-- session flagged `reclaimed`, so a second run (another node reaping at the same time) finds
-- nothing held and the session never gets a grant again.
-- KEYS: campaign hashes of one group. ARGV[1]: session. Reply: micros returned.
local function int(x) return string.format('%d', x) end
local sess = ARGV[1]
local fg = 'node:' .. sess .. ':granted'
local fs = 'node:' .. sess .. ':spent'
local fr = 'node:' .. sess .. ':returned'
local fx = 'node:' .. sess .. ':reclaimed'
local total = 0
for _, key in ipairs(KEYS) do
  local v = redis.call('HMGET', key, 'held', fg, fs, fr)
  if v[2] then
    local h = math.max((tonumber(v[2]) or 0) - (tonumber(v[3]) or 0) - (tonumber(v[4]) or 0), 0)
    local held = math.max((tonumber(v[1]) or 0) - h, 0)
    local r = (tonumber(v[4]) or 0) + h
    redis.call('HSET', key, 'held', int(held), fr, int(r), fx, '1')
    total = total + h
  end
end
return total
