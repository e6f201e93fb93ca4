-- Writes off a dead session's lease (as reap.lua does). KEYS[1]: campaign hash. ARGV[1]: session.
-- Reply: micros released, or -1 for no such campaign.
local function int(x) return string.format('%d', x) end
local sess = ARGV[1]
local fg = 'node:' .. sess .. ':granted'
local fs = 'node:' .. sess .. ':spent'
local fr = 'node:' .. sess .. ':returned'
local fx = 'node:' .. sess .. ':reclaimed'
local fc = 'node:' .. sess .. ':rc_charged'
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
local v = redis.call('HMGET', KEYS[1], 'held', fg, fs, fr, fc, 'spent', 'day_spent')
if not v[2] then
  return 0
end
local s = tonumber(v[3]) or 0
local h = math.max((tonumber(v[2]) or 0) - s - (tonumber(v[4]) or 0), 0)
-- Charges the session reported to reconciliation but never to the budget were spent from
-- this lease: they stay spent (settlement credits them back if unrendered), only the rest
-- returns.
local x = math.min(math.max((tonumber(v[5]) or 0) - s, 0), h)
local held = math.max((tonumber(v[1]) or 0) - h, 0)
local r = (tonumber(v[4]) or 0) + h - x
redis.call('HSET', KEYS[1], 'held', int(held), fr, int(r), fx, '1', fs, int(s + x),
  'spent', int((tonumber(v[6]) or 0) + x))
if v[7] and x > 0 then
  redis.call('HSET', KEYS[1], 'day_spent', int((tonumber(v[7]) or 0) + x))
end
return h - x
