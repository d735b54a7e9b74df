-- Records a revert decided outside apply_command.lua (a job that is not a valid
-- command, or one whose retries ran out) and tells subscribers, unless the
-- operation already has an outcome.
-- KEYS[1]: the operation's outcome key in its graph
-- ARGV[1]: stored outcome JSON {"status":"reverted","code":...,"message":...}
-- ARGV[2]: outcome TTL in seconds
-- ARGV[3]: the sender's notification channel
-- ARGV[4]: notification JSON
-- Returns: 1 when recorded, 0 when the operation had an outcome already
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  redis.call('PUBLISH', ARGV[3], ARGV[4])
  return 1
end
return 0
