-- Pauses or resumes a campaign. KEYS[1]: campaign hash. ARGV[1]: '1' paused, '0' running.
-- Reply: 1 done, 0 no such campaign.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'paused', ARGV[1])
return 1
