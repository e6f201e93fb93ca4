-- One node's sync report for several campaigns (see store/mod.rs `apply_sync`, which this
-- mirrors line by line). KEYS: campaign hashes. ARGV[1]: session; then four numbers per key:
-- granted (received by the node so far), spent, returned (cumulative), want (lease to hold).
-- Reply per key: {exists, granted, budget, spent, held, paused}.
local sess = ARGV[1]
local fg = 'node:' .. sess .. ':granted'
local fs = 'node:' .. sess .. ':spent'
local fr = 'node:' .. sess .. ':returned'
local fx = 'node:' .. sess .. ':reclaimed'
-- Lua numbers are doubles: write integers with %d so Redis never stores "1e+15".
local function int(x) return string.format('%d', x) end
local out = {}
for i, key in ipairs(KEYS) do
  local a = 1 + (i - 1) * 4
  local rg = tonumber(ARGV[a + 1])
  local rs = tonumber(ARGV[a + 2])
  local rr = tonumber(ARGV[a + 3])
  local want = tonumber(ARGV[a + 4])
  local v = redis.call('HMGET', key, 'budget', 'spent', 'held', 'paused', fg, fs, fr, fx)
  if not v[1] then
    out[i] = {0, 0, 0, 0, 0, 0}
  else
    local budget = tonumber(v[1]) or 0
    local spent = tonumber(v[2]) or 0
    local held = tonumber(v[3]) or 0
    local paused = v[4] == '1'
    local g = tonumber(v[5]) or 0
    local s = tonumber(v[6]) or 0
    local r = tonumber(v[7]) or 0
    local reclaimed = v[8] == '1'
    if rg > g and not reclaimed then
      held = held + (rg - g)
      g = rg
    end
    local h = math.max(g - s - r, 0)
    local ds = math.max(rs - s, 0)
    local dr = math.max(rr - r, 0)
    s = math.max(s, rs)
    r = math.max(r, rr)
    spent = spent + ds
    local gone = math.min(ds + dr, h)
    held = math.max(held - gone, 0)
    h = h - gone
    local grant = 0
    if not paused and not reclaimed and want > h then
      local avail = math.max(budget - spent - held, 0)
      grant = math.min(want - h, avail)
    end
    g = g + grant
    held = held + grant
    if g > 0 or s > 0 or r > 0 then
      redis.call('HSET', key, 'spent', int(spent), 'held', int(held), fg, int(g), fs, int(s), fr, int(r))
    end
    local p = 0
    if paused then p = 1 end
    out[i] = {1, g, budget, spent, held, p}
  end
end
return out
