-- Settles due buckets of one campaign group, each exactly once (see store/recon.rs
-- `settle_bucket`, which this mirrors): the bucket leaves the open set and is flagged settled
-- in the same script that credits its campaign, so a second run, on any node, finds nothing
-- to do. The billed amounts are the tracker's durable counts, read by the caller after the
-- bucket was past settle_after_ms (no claim can add to them any more). The node-reported
-- billed counts are a part of them (what the billing nodes lived to report), so the larger of
-- the two is the durable count wherever the tracker writes one; where it did not (a bucket
-- billed by nodes of a version without durable counts) the reported count still keeps a
-- rendered impression from being credited back. The campaign's rc:billed is corrected to the
-- amount settled on.
-- KEYS[1]: the group's open-bucket set; then per bucket: the bucket hash, the campaign hash
-- (all under the group's hash tag). ARGV[1]: retain_ms; then per bucket: billed micros.
-- Reply {settled, credited, uncredited, billed_beyond_charged}.
local function int(x) return string.format('%d', x) end
local settled, credited, uncredited, over = 0, 0, 0, 0
local n = (#KEYS - 1) / 2
for i = 1, n do
  local bk = KEYS[2 * i]
  local ck = KEYS[2 * i + 1]
  redis.call('ZREM', KEYS[1], bk)
  local v = redis.call('HMGET', bk, 'charged', 'billed', 'settled')
  if v[3] and v[3] ~= '1' then
    local c = tonumber(v[1]) or 0
    local reported = tonumber(v[2]) or 0
    local b = math.max(tonumber(ARGV[1 + i]) or 0, reported)
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
      redis.call('HINCRBY', ck, 'rc:billed', int(b - reported))
      redis.call('HINCRBY', ck, 'rc:open', -1)
      redis.call('HINCRBY', ck, 'rc:settled', 1)
      credited = credited + applied
      uncredited = uncredited + due_credit - applied
      over = over + o
      settled = settled + 1
    end
    redis.call('HSET', bk, 'billed', int(b), 'settled', '1')
    redis.call('PEXPIRE', bk, ARGV[1])
  end
end
return {settled, credited, uncredited, over}
