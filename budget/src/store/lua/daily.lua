-- Changes a campaign's daily settings (see store/mod.rs `apply_daily`, which this mirrors
-- line by line). KEYS[1]: campaign hash. ARGV: change the daily budget ('0' | '1'), the daily
-- budget ('' removes it), pacing ('' keeps it), zone ('' keeps it), then the caller's day in
-- the zone the campaign has after the change: zone, day id; then max.
-- Reply {code, n}: {1, 0} done, {0, 0} no such campaign, {-1, daily} past max,
-- {-2, committed} below day_spent + held.
local function int(x) return string.format('%d', x) end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, 0}
end
local v = redis.call('HMGET', KEYS[1], 'held', 'daily', 'pacing', 'tz', 'day', 'day_spent')
local held = tonumber(v[1]) or 0
local daily = tonumber(v[2])
local pacing = v[3] or 'asap'
local tz = v[4] or 'UTC'
local day = tonumber(v[5]) or 0
local day_spent = tonumber(v[6]) or 0
local wtz = ARGV[5]
local wday = tonumber(ARGV[6])
local max = tonumber(ARGV[7])
if ARGV[1] == '1' then
  daily = tonumber(ARGV[2])
end
if ARGV[3] ~= '' then
  pacing = ARGV[3]
end
-- A new zone has its own day ids: take the caller's, keeping what was spent today.
if ARGV[4] ~= '' and ARGV[4] ~= tz and ARGV[4] == wtz then
  tz = ARGV[4]
  day = wday
end
if wtz == tz and wday > day then
  day = wday
  day_spent = 0
end
if daily then
  if daily > max then
    return {-1, daily}
  end
  local committed = day_spent + held
  if daily < committed then
    return {-2, committed}
  end
  redis.call('HSET', KEYS[1], 'daily', int(daily))
else
  redis.call('HDEL', KEYS[1], 'daily')
end
redis.call('HSET', KEYS[1], 'pacing', pacing, 'tz', tz, 'day', int(day), 'day_spent', int(day_spent))
return {1, 0}
