package redisstate

import "github.com/redis/rueidis"

// Every script touches only keys of one hash slot: either one bucket's keys
// (herald:{<app>:<bucket>}:…, passed as KEYS or built in Lua from the bucket
// prefix ARGV) or the node-liveness keys (herald:{nodes}:…). Scripts that
// change counts are never retried by the client (not idempotent).

// occScript adds (ARGV[2] = "1") or removes (ARGV[2] = "-1") one subscription
// of this node to channel ARGV[1] and returns the new global count.
// KEYS[1] = occ (channel → global count, the app's index of occupied
// channels in this bucket), KEYS[2] = occn:<node> (channel → this node's count).
// A removal for which this node has no count left changes nothing (its count
// was never recorded, or was already subtracted by a reaper).
var occScript = rueidis.NewLuaScript(`
local ch = ARGV[1]
if ARGV[2] == '1' then
  redis.call('HINCRBY', KEYS[2], ch, 1)
  return redis.call('HINCRBY', KEYS[1], ch, 1)
end
local n = tonumber(redis.call('HGET', KEYS[2], ch) or '0')
if n <= 0 then
  return tonumber(redis.call('HGET', KEYS[1], ch) or '0')
end
if n == 1 then redis.call('HDEL', KEYS[2], ch) else redis.call('HINCRBY', KEYS[2], ch, -1) end
local t = redis.call('HINCRBY', KEYS[1], ch, -1)
if t <= 0 then
  redis.call('HDEL', KEYS[1], ch)
  return 0
end
return t
`)

// joinScript records socket ARGV[3] (field "<socket>\0<channel>") of user
// ARGV[1] in a presence channel. Returns 1 when the user became a member, 0
// when it already was, -1 when the channel has ARGV[4] (> 0) members already.
// KEYS[1] = pm:<channel> (user → user_info of its first socket),
// KEYS[2] = pc:<channel> (user → sockets on all nodes),
// KEYS[3] = ps:<node> (socket\0channel → user, this node's presence sockets).
var joinScript = rueidis.NewLuaScript(`
local user = ARGV[1]
local cur = redis.call('HGET', KEYS[3], ARGV[3])
if cur then
  if cur ~= user then return redis.error_reply('ERR socket already joined as another user') end
  if redis.call('HGET', KEYS[2], user) == '1' then return 1 end
  return 0
end
if redis.call('HEXISTS', KEYS[1], user) == 0 then
  local max = tonumber(ARGV[4])
  if max > 0 and redis.call('HLEN', KEYS[1]) >= max then return -1 end
  redis.call('HSET', KEYS[1], user, ARGV[2])
end
redis.call('HSET', KEYS[3], ARGV[3], user)
if redis.call('HINCRBY', KEYS[2], user, 1) == 1 then return 1 end
return 0
`)

// leaveScript undoes joinScript; returns 1 when it was the user's last socket
// on any node (the member is removed). Same KEYS; ARGV[1] = user,
// ARGV[2] = "<socket>\0<channel>".
var leaveScript = rueidis.NewLuaScript(`
if redis.call('HGET', KEYS[3], ARGV[2]) ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[3], ARGV[2])
if redis.call('HINCRBY', KEYS[2], ARGV[1], -1) > 0 then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
`)

// signInScript records socket ARGV[2] (field "<socket>\0<user>") signed in as
// user ARGV[1] on node ARGV[3]; returns 1 when the user has exactly this one
// socket now.
// KEYS[1] = uc (user → signed-in sockets on all nodes),
// KEYS[2] = us:<node> (socket\0user → user, this node's signed-in sockets),
// KEYS[3] = un:<user> (node → the user's signed-in sockets there: the
// connection registry direct push reads).
var signInScript = rueidis.NewLuaScript(`
if redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[1]) == 0 then
  if redis.call('HGET', KEYS[1], ARGV[1]) == '1' then return 1 end
  return 0
end
redis.call('HINCRBY', KEYS[3], ARGV[3], 1)
if redis.call('HINCRBY', KEYS[1], ARGV[1], 1) == 1 then return 1 end
return 0
`)

// signOutScript undoes signInScript; returns 1 when that was the user's last
// signed-in socket anywhere. Same KEYS and ARGV.
var signOutScript = rueidis.NewLuaScript(`
if redis.call('HDEL', KEYS[2], ARGV[2]) == 0 then return 0 end
if redis.call('HINCRBY', KEYS[3], ARGV[3], -1) <= 0 then redis.call('HDEL', KEYS[3], ARGV[3]) end
if redis.call('HINCRBY', KEYS[1], ARGV[1], -1) > 0 then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
`)

// reapScript removes up to ARGV[2] entries of a dead node's contributions to
// one bucket, presence sockets first, then signed-in sockets, then
// subscription counts, and returns {more, kind, channel, user, count, …}:
// more is 1 while the dead node still has entries in the bucket; each
// transition is m (member removed), u (user offline), v (vacated) or c (count
// changed). Removing an entry and reporting its transition happen in one
// atomic step, so however many reapers run (or crash and retry), each
// transition is reported once.
// KEYS[1] = occ, KEYS[2] = occn:<dead>, KEYS[3] = ps:<dead>, KEYS[4] = us:<dead>,
// KEYS[5] = uc; ARGV[1] = the bucket's key prefix "herald:{<app>:<bucket>}:",
// ARGV[3] = the dead node's id (its field in each user's un:<user> registry).
var reapScript = rueidis.NewLuaScript(`
local p, batch = ARGV[1], tonumber(ARGV[2])
local out = {'0'}
local function add(kind, ch, user, n)
  out[#out+1] = kind; out[#out+1] = ch; out[#out+1] = user; out[#out+1] = tostring(n)
end
local f = redis.call('HRANDFIELD', KEYS[3], batch, 'WITHVALUES')
if #f > 0 then
  for i = 1, #f, 2 do
    local field, user = f[i], f[i+1]
    local z = string.find(field, '\0', 1, true)
    redis.call('HDEL', KEYS[3], field)
    if z then
      local ch = string.sub(field, z + 1)
      local pc = p .. 'pc:' .. ch
      if redis.call('HINCRBY', pc, user, -1) <= 0 then
        redis.call('HDEL', pc, user)
        if redis.call('HDEL', p .. 'pm:' .. ch, user) == 1 then add('m', ch, user, 0) end
      end
    end
  end
else
  f = redis.call('HRANDFIELD', KEYS[4], batch, 'WITHVALUES')
  if #f > 0 then
    for i = 1, #f, 2 do
      local user = f[i+1]
      redis.call('HDEL', KEYS[4], f[i])
      local un = p .. 'un:' .. user
      if redis.call('HINCRBY', un, ARGV[3], -1) <= 0 then redis.call('HDEL', un, ARGV[3]) end
      if redis.call('HINCRBY', KEYS[5], user, -1) <= 0 then
        if redis.call('HDEL', KEYS[5], user) == 1 then add('u', '', user, 0) end
      end
    end
  else
    f = redis.call('HRANDFIELD', KEYS[2], batch, 'WITHVALUES')
    for i = 1, #f, 2 do
      local ch, n = f[i], tonumber(f[i+1]) or 0
      redis.call('HDEL', KEYS[2], ch)
      if n > 0 then
        local t = redis.call('HINCRBY', KEYS[1], ch, -n)
        if t <= 0 then
          redis.call('HDEL', KEYS[1], ch)
          add('v', ch, '', 0)
        else
          add('c', ch, '', t)
        end
      end
    end
  end
end
if redis.call('EXISTS', KEYS[2], KEYS[3], KEYS[4]) > 0 then out[1] = '1' end
return out
`)

// beatScript refreshes node ARGV[1]'s heartbeat KEYS[1] to token ARGV[2] with
// expiry ARGV[3] ms, lists the node in KEYS[2] (the node index) and adds
// registry entries ARGV[4…] to KEYS[3]. It returns the previous token (nil
// when the heartbeat had expired or never existed).
var beatScript = rueidis.NewLuaScript(`
local prev = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
for i = 4, #ARGV do redis.call('SADD', KEYS[3], ARGV[i]) end
return prev
`)

// unregisterScript drops registry entry ARGV[1] of a node from KEYS[2] unless
// the node's heartbeat KEYS[1] is back.
var unregisterScript = rueidis.NewLuaScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
return redis.call('SREM', KEYS[2], ARGV[1])
`)

// forgetScript removes node ARGV[1] from the node index KEYS[3] once its
// heartbeat KEYS[1] is gone and its registry KEYS[2] is empty.
var forgetScript = rueidis.NewLuaScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('SCARD', KEYS[2]) > 0 then return 0 end
redis.call('SREM', KEYS[3], ARGV[1])
return 1
`)

// unlockScript deletes lock KEYS[1] if it still holds token ARGV[1].
var unlockScript = rueidis.NewLuaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// cacheGetScript returns {value, pttl} of KEYS[1], or nil.
var cacheGetScript = rueidis.NewLuaScriptReadOnly(`
local v = redis.call('GET', KEYS[1])
if not v then return false end
return {v, redis.call('PTTL', KEYS[1])}
`)
