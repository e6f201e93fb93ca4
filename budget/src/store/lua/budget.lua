-- Creates a campaign or changes its budget. KEYS[1]: campaign hash (the caller adds it to the
-- catalog, another slot on a cluster).
-- ARGV: mode ('seed' | 'set' | 'add'), amount, paused for a new campaign ('0' | '1'), max,
-- then a new campaign's daily budget ('' for none), pacing and zone.
-- Reply {code, n}: {1, budget} done, {0, 0} seed found it present,
-- {-1, budget} past max, {-2, committed} below spent + held.
local function int(x) return string.format('%d', x) end
local mode = ARGV[1]
local amount = tonumber(ARGV[2])
local max = tonumber(ARGV[4])
local exists = redis.call('EXISTS', KEYS[1]) == 1
if mode == 'seed' and exists then
  return {0, 0}
end
local v = redis.call('HMGET', KEYS[1], 'budget', 'spent', 'held')
local budget = amount
if mode == 'add' then
  budget = (tonumber(v[1]) or 0) + amount
end
if budget > max then
  return {-1, budget}
end
local committed = (tonumber(v[2]) or 0) + (tonumber(v[3]) or 0)
if budget < committed then
  return {-2, committed}
end
if exists then
  redis.call('HSET', KEYS[1], 'budget', int(budget))
else
  redis.call('HSET', KEYS[1], 'budget', int(budget), 'spent', '0', 'held', '0', 'paused', ARGV[3],
    'pacing', ARGV[6] or 'asap', 'tz', ARGV[7] or 'UTC')
  if ARGV[5] and ARGV[5] ~= '' then
    redis.call('HSET', KEYS[1], 'daily', ARGV[5])
  end
end
return {1, budget}
