-- Forgets a session's records in the given campaigns where it holds nothing.
-- KEYS: campaign hashes. ARGV[1]: session. Reply: records removed.
local sess = ARGV[1]
local fg = 'node:' .. sess .. ':granted'
local fs = 'node:' .. sess .. ':spent'
local fr = 'node:' .. sess .. ':returned'
local fx = 'node:' .. sess .. ':reclaimed'
local removed = 0
for _, key in ipairs(KEYS) do
  local v = redis.call('HMGET', key, fg, fs, fr)
  if v[1] then
    local h = (tonumber(v[1]) or 0) - (tonumber(v[2]) or 0) - (tonumber(v[3]) or 0)
    if h <= 0 then
      redis.call('HDEL', key, fg, fs, fr, fx)
      removed = removed + 1
    end
  end
end
return removed
