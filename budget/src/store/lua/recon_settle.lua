-- Settles the due buckets, each exactly once (see store/recon.rs `settle_bucket`, which this
-- mirrors): the bucket leaves the open set and is flagged settled in the same script that
-- credits its campaign, so a second run, on any node, finds nothing to do.
-- KEYS[1]: the sorted set of open buckets (score: bucket start). The bucket and campaign
-- hashes are read from it, so this script suits a single Redis, not a cluster.
-- ARGV: cutoff (buckets starting at or before it are due), limit, retain_ms.
-- Reply {settled, credited, uncredited, billed_beyond_charged, more}.
local function int(x) return string.format('%d', x) end
local limit = tonumber(ARGV[2])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, limit + 1)
local more = 0
if #due > limit then
  more = 1
end
local settled, credited, uncredited, over = 0, 0, 0, 0
for i = 1, math.min(#due, limit) do
  local bk = due[i]
  redis.call('ZREM', KEYS[1], bk)
  local v = redis.call('HMGET', bk, 'c', 'charged', 'billed', 'settled')
  if v[1] and v[4] ~= '1' then
    local ck = v[1]
    local c = tonumber(v[2]) or 0
    local b = tonumber(v[3]) or 0
    local due_credit = math.max(c - b, 0)
    local o = math.max(b - c, 0)
    local spent = tonumber(redis.call('HGET', ck, 'spent'))
    if spent then
      local applied = math.min(due_credit, spent)
      redis.call('HSET', ck, 'spent', int(spent - applied))
      redis.call('HINCRBY', ck, 'rc:credited', int(applied))
      redis.call('HINCRBY', ck, 'rc:uncredited', int(due_credit - applied))
      redis.call('HINCRBY', ck, 'rc:over', int(o))
      redis.call('HINCRBY', ck, 'rc:s_charged', int(c))
      redis.call('HINCRBY', ck, 'rc:s_billed', int(b))
      redis.call('HINCRBY', ck, 'rc:open', -1)
      redis.call('HINCRBY', ck, 'rc:settled', 1)
      credited = credited + applied
      uncredited = uncredited + due_credit - applied
      over = over + o
      settled = settled + 1
    end
    redis.call('HSET', bk, 'settled', '1')
    redis.call('PEXPIRE', bk, ARGV[3])
  end
end
return {settled, credited, uncredited, over, more}
