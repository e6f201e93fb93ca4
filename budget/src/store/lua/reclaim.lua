-- Writes off a dead session's lease. KEYS[1]: campaign hash. ARGV[1]: session.
-- Reply: micros released, or -1 for no such campaign.
local function int(x) return string.format('%d', x) end
local sess = ARGV[1]
local fg = 'node:' .. sess .. ':granted'
local fs = 'node:' .. sess .. ':spent'
local fr = 'node:' .. sess .. ':returned'
local fx = 'node:' .. sess .. ':reclaimed'
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
local v = redis.call('HMGET', KEYS[1], 'held', fg, fs, fr)
if not v[2] then
  return 0
end
local h = math.max((tonumber(v[2]) or 0) - (tonumber(v[3]) or 0) - (tonumber(v[4]) or 0), 0)
local held = math.max((tonumber(v[1]) or 0) - h, 0)
local r = (tonumber(v[4]) or 0) + h
redis.call('HSET', KEYS[1], 'held', int(held), fr, int(r), fx, '1')
return h
