//! The Lua scripts the Redis store runs. Each is one round trip and atomic:
//! Redis runs a script to the end before any other command.

/// KEYS: the counters. ARGV[1]: the amount; ARGV[2]: `1` to charge only if
/// every counter fits; then for each key its limit and its TTL in ms.
/// Returns `{admitted, used...}`.
pub(crate) const CHARGE: &str = r"
local amount = tonumber(ARGV[1])
local if_fits = ARGV[2] == '1'
local used = {}
for i = 1, #KEYS do
  used[i] = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
end
if if_fits then
  for i = 1, #KEYS do
    if amount < 0 or used[i] + amount > tonumber(ARGV[1 + 2 * i]) then
      table.insert(used, 1, 0)
      return used
    end
  end
end
for i = 1, #KEYS do
  local value = used[i] + amount
  if value < 0 then value = 0 end
  local ttl = redis.call('PTTL', KEYS[i])
  if ttl > 0 then
    redis.call('SET', KEYS[i], value, 'PX', ttl)
  else
    redis.call('SET', KEYS[i], value, 'PX', ARGV[2 + 2 * i])
  end
  used[i] = value
end
table.insert(used, 1, 1)
return used
";

/// KEYS[1]: the bucket. ARGV: tokens per millisecond, capacity, cost, idle
/// TTL in ms. Time is Redis's own, so every instance sees one clock.
/// Returns `{allowed, whole tokens left, ms until the cost is back}`.
pub(crate) const TAKE: &str = r"
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = capacity
  at = now
end
local elapsed = now - at
if elapsed < 0 then elapsed = 0 end
tokens = math.min(capacity, tokens + elapsed * rate)
local allowed = 0
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
elseif rate > 0 then
  wait = math.ceil((cost - tokens) / rate)
else
  wait = 3600000
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {allowed, math.floor(tokens), wait}
";
