-- Applies one batch of a session's reconciliation counts, at most once (see store/recon.rs,
-- `gate` and the memory store's `reconcile`, which this mirrors).
-- KEYS[1]: the session's last applied batch number, KEYS[2]: the bucket size the store uses,
-- KEYS[3]: the sorted set of open buckets; then per item the campaign hash and the bucket hash.
-- ARGV: seq, prev, bucket_ms, settle_after_ms, retain_ms, now_ms; then per item: bucket start,
-- charged, billed (integer strings); last, the session. What a session reported charged is
-- also kept in the campaign hash (`node:SESSION:rc_charged`), so a reap counts as spent what
-- a dead node's budget reports never carried but settlement will credit against.
-- Reply {code, absent, late}: code 1 applied, 0 duplicate, -1 blocked (the batch before it in
-- the call was not applied), -2 bucket size mismatch (then absent holds the store's size).
local seq = tonumber(ARGV[1])
local prev = tonumber(ARGV[2])
local bucket_ms = tonumber(ARGV[3])
local settle_after = tonumber(ARGV[4])
local retain = tonumber(ARGV[5])
local now = tonumber(ARGV[6])
local size = redis.call('GET', KEYS[2])
if size and tonumber(size) ~= bucket_ms then
  return {-2, tonumber(size) or 0, 0}
end
local last = redis.call('GET', KEYS[1])
if last then
  last = tonumber(last)
  if seq <= last then
    return {0, 0, 0}
  end
end
if prev > 0 and (not last or last < prev) then
  return {-1, 0, 0}
end
if not size then
  redis.call('SET', KEYS[2], ARGV[3])
end
local absent = 0
local late = 0
local n = (#KEYS - 3) / 2
local fc = 'node:' .. ARGV[7 + 3 * n] .. ':rc_charged'
for i = 1, n do
  local ck = KEYS[2 + 2 * i]
  local bk = KEYS[3 + 2 * i]
  local a = 6 + (i - 1) * 3
  local start = tonumber(ARGV[a + 1])
  local charged = ARGV[a + 2]
  local billed = ARGV[a + 3]
  if redis.call('EXISTS', ck) == 0 then
    absent = absent + 1
  else
    local settled = redis.call('HGET', bk, 'settled')
    if settled == '1' or (not settled and start + bucket_ms + settle_after + retain <= now) then
      late = late + 1
      redis.call('HINCRBY', ck, 'rc:late_charged', charged)
      redis.call('HINCRBY', ck, 'rc:late_billed', billed)
    else
      if not settled then
        redis.call('HSET', bk, 'c', ck, 'charged', '0', 'billed', '0', 'settled', '0')
        redis.call('ZADD', KEYS[3], start, bk)
        redis.call('HINCRBY', ck, 'rc:open', 1)
      end
      redis.call('HINCRBY', bk, 'charged', charged)
      redis.call('HINCRBY', bk, 'billed', billed)
      redis.call('HINCRBY', ck, 'rc:charged', charged)
      if charged ~= '0' then
        redis.call('HINCRBY', ck, fc, charged)
      end
      redis.call('HINCRBY', ck, 'rc:billed', billed)
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[5])
return {1, absent, late}
