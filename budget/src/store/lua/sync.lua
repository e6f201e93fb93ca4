-- One node's sync report for several campaigns (see store/mod.rs `apply_sync`, which this
-- mirrors line by line). KEYS: campaign hashes. ARGV[1]: session; then nine values per key:
-- granted (received by the node so far), spent, returned (cumulative), want (lease to hold),
-- and the campaign's day by the node's clock: zone ('' for none), day id, start ms, end ms,
-- now ms. Every rule is per campaign, on that campaign's own hash (daily fields `daily`,
-- `pacing`, `tz`, `day`, `day_spent`), so a cluster port only groups keys by slot.
-- Reply per key: {exists, granted, budget, spent, held, paused, room, daily (-1: none), day,
-- day_spent, even (0 | 1), tz}.
local sess = ARGV[1]
local fg = 'node:' .. sess .. ':granted'
local fs = 'node:' .. sess .. ':spent'
local fr = 'node:' .. sess .. ':returned'
local fx = 'node:' .. sess .. ':reclaimed'
-- Lua numbers are doubles: write integers with %d so Redis never stores "1e+15".
local function int(x) return string.format('%d', x) end
-- floor(a * b / c), exact while a * b < 2^53 (the double quotient is corrected by one).
local function muldiv(a, b, c)
  local p = a * b
  local q = math.floor(p / c)
  if q * c > p then q = q - 1 end
  if (q + 1) * c <= p then q = q + 1 end
  return q
end
local out = {}
for i, key in ipairs(KEYS) do
  local a = 1 + (i - 1) * 9
  local rg = tonumber(ARGV[a + 1])
  local rs = tonumber(ARGV[a + 2])
  local rr = tonumber(ARGV[a + 3])
  local want = tonumber(ARGV[a + 4])
  local wtz = ARGV[a + 5]
  local wday = tonumber(ARGV[a + 6])
  local wstart = tonumber(ARGV[a + 7])
  local wend = tonumber(ARGV[a + 8])
  local wnow = tonumber(ARGV[a + 9])
  local v = redis.call('HMGET', key, 'budget', 'spent', 'held', 'paused', fg, fs, fr, fx,
    'daily', 'pacing', 'tz', 'day', 'day_spent')
  if not v[1] then
    out[i] = {0}
  else
    local budget = tonumber(v[1]) or 0
    local spent = tonumber(v[2]) or 0
    local held = tonumber(v[3]) or 0
    local paused = v[4] == '1'
    local g = tonumber(v[5]) or 0
    local s = tonumber(v[6]) or 0
    local r = tonumber(v[7]) or 0
    local reclaimed = v[8] == '1'
    local daily = tonumber(v[9])
    local even = v[10] == 'even'
    local tz = v[11] or 'UTC'
    local day = tonumber(v[12]) or 0
    local day_spent = tonumber(v[13]) or 0
    local day_before, day_spent_before = day, day_spent
    -- Totals::advance_day: forward only, and only for a window in the campaign's zone.
    local today = false
    if wtz == tz then
      if wday > day then
        day = wday
        day_spent = 0
      end
      today = wday == day
    end
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
    day_spent = day_spent + ds
    local gone = math.min(ds + dr, h)
    held = math.max(held - gone, 0)
    h = h - gone
    local avail = math.max(budget - spent - held, 0)
    -- Totals::daily_room
    if daily then
      if not today then
        avail = 0
      else
        local committed = day_spent + held
        avail = math.min(avail, math.max(daily - committed, 0))
        if even then
          local line = daily
          if wend > wstart then
            local elapsed = math.min(math.max(wnow, wstart), wend) - wstart
            line = muldiv(daily, elapsed, wend - wstart)
          end
          avail = math.min(avail, math.max(line - committed, 0))
        end
      end
    end
    local grant = 0
    if not paused and not reclaimed and want > h then
      grant = math.min(want - h, avail)
    end
    avail = avail - grant
    g = g + grant
    held = held + grant
    if g > 0 or s > 0 or r > 0 then
      redis.call('HSET', key, 'spent', int(spent), 'held', int(held), fg, int(g), fs, int(s), fr, int(r))
    end
    if day ~= day_before or day_spent ~= day_spent_before then
      redis.call('HSET', key, 'day', int(day), 'day_spent', int(day_spent))
    end
    local p = 0
    if paused then p = 1 end
    local e = 0
    if even then e = 1 end
    out[i] = {1, g, budget, spent, held, p, avail, daily or -1, day, day_spent, e, tz}
  end
end
return out
