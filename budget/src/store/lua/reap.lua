-- Returns a dead session's unspent leases to their campaigns (less what it reported charged
-- to reconciliation beyond its reported spend, which becomes spent), for every campaign of one group
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
local fc = 'node:' .. sess .. ':rc_charged'
local total = 0
for _, key in ipairs(KEYS) do
  local v = redis.call('HMGET', key, 'held', fg, fs, fr, fc, 'spent', 'day_spent')
  if v[2] then
    local s = tonumber(v[3]) or 0
    local h = math.max((tonumber(v[2]) or 0) - s - (tonumber(v[4]) or 0), 0)
    -- Charges it reported to reconciliation but never to the budget were spent from this
    -- lease: they stay spent (settlement credits them back if unrendered); the rest returns.
    local x = math.min(math.max((tonumber(v[5]) or 0) - s, 0), h)
    local held = math.max((tonumber(v[1]) or 0) - h, 0)
    local r = (tonumber(v[4]) or 0) + h - x
    redis.call('HSET', key, 'held', int(held), fr, int(r), fx, '1', fs, int(s + x),
      'spent', int((tonumber(v[6]) or 0) + x))
    if v[7] and x > 0 then
      redis.call('HSET', key, 'day_spent', int((tonumber(v[7]) or 0) + x))
    end
    total = total + h - x
  end
end
return total
