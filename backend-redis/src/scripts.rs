//! The Lua scripts behind every multi-step operation. Each runs atomically
//! in Redis. Payload bytes are moved as strings and never re-encoded: the
//! claim script splices the raw payload into the working-on JSON, and uses
//! `cjson` only to check that it is JSON.
//!
//! Some scripts build key names from a prefix (`delayed:<s>` members of
//! `timestamps:` sets name the lists to touch). That is fine on a single
//! Redis server; Redis Cluster would need hash-tagged namespaces.

use redis::Script;
use std::sync::LazyLock;

/// The Lua functions that keep resq's enqueue-time side records
/// (`<ns>:resq:enqueued:<queue>`, a list that other Resque clients never
/// read): the enqueue time of each queued job, in epoch ms as a decimal
/// string, aligned with the queue list position by position. A record is
/// trusted only while it is "in step", as long as its queue; every resq
/// script that moves a job keeps it so. A foreign client's push or pop
/// puts it out of step: the script that notices deletes the record, and
/// the queue's times are unknown until it drains (both lengths 0, in step
/// again). The check is by length only: a foreign push and pop between two
/// resq scripts cancel out unnoticed (see README.md). Every call on a
/// record key is `redis.pcall`: a broken record key (another client's
/// doing) must never stop a job from moving.
macro_rules! record_lua {
    () => {
        r#"
-- A record's length; -1 when the key is not a list.
local function rec_len(rkey)
  local n = redis.pcall('LLEN', rkey)
  if type(n) ~= 'number' then return -1 end
  return n
end
-- A record value as ms; -1 unless it is digits only.
local function rec_ms(v)
  if type(v) == 'string' and #v <= 15 and string.find(v, '^%d+$') then return tonumber(v) end
  return -1
end
-- After one job was pushed (cmd: RPUSH or LPUSH), len the queue's new
-- length: records it if the record was in step, else drops the record.
local function rec_pushed(rkey, len, stamp, cmd)
  local n = rec_len(rkey)
  if n == len - 1 then
    redis.pcall(cmd, rkey, stamp)
  elseif n ~= 0 then
    redis.pcall('DEL', rkey)
  end
end
-- After count jobs were popped from the queue's head: their records (a
-- table) if the record was in step, else nil, having dropped the record.
local function rec_popped(rkey, qkey, count)
  local n = rec_len(rkey)
  if n == redis.call('LLEN', qkey) + count then
    local r = redis.pcall('LPOP', rkey, count)
    if type(r) == 'table' and not r.err then return r end
  elseif n ~= 0 then
    redis.pcall('DEL', rkey)
  end
  return nil
end
-- Drops a record found out of step (n: its length).
local function rec_unstep(rkey, n)
  if n ~= 0 then redis.pcall('DEL', rkey) end
end
-- After a removal marked the removed jobs' records '-': drops those, and
-- the whole record if that left it out of step or the queue empty.
local function rec_drop_marked(rkey, qkey)
  redis.pcall('LREM', rkey, 0, '-')
  local len = redis.call('LLEN', qkey)
  if len == 0 or rec_len(rkey) ~= len then redis.pcall('DEL', rkey) end
end
"#
    };
}

/// The Lua functions of flow control (`resq_core::flow`), for the claim
/// scripts. The limits hash holds `"<max> <period ms> <cap>"` per queue (0
/// for none; an unreadable value limits nothing); the slots hash holds, per
/// worker member, the capped queue whose job it runs. A rate-limited
/// queue's sorted set logs its starts (score and member: the server's time
/// in µs, `TIME`, the member followed by the worker's member) within its
/// window. Times are formatted with `%.0f`: Lua's `tostring` would round
/// them to 14 digits.
macro_rules! flow_lua {
    () => {
        r#"
-- Whether any queue has limits; a limits key another client broke (not a
-- hash) limits nothing rather than stopping every claim.
local function flow_limited(limits)
  local n = redis.pcall('HLEN', limits)
  return type(n) == 'number' and n > 0
end
-- The server's time in µs, read once per script (only rate limits need it).
local flow_time = nil
local function flow_now()
  if not flow_time then
    local t = redis.call('TIME')
    flow_time = tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  return flow_time
end
-- How many of want jobs the queue qname may start now, its rate period in
-- µs (0: no rate limit) and whether it is capped.
local function flow_room(limits, slots, rkey, qname, want)
  local v = redis.call('HGET', limits, qname)
  if not v then return want, 0, false end
  local max, period, cap = string.match(v, '^(%d+) (%d+) (%d+)$')
  if not max then return want, 0, false end
  max, period, cap = tonumber(max), tonumber(period) * 1000, tonumber(cap)
  local room = want
  if max > 0 and period > 0 then
    redis.call('ZREMRANGEBYSCORE', rkey, '-inf', string.format('%.0f', flow_now() - period))
    local left = max - redis.call('ZCARD', rkey)
    if left < room then room = left end
  else
    period = 0
  end
  if cap > 0 then
    local running = 0
    for _, q in ipairs(redis.call('HVALS', slots)) do
      if q == qname then running = running + 1 end
    end
    if cap - running < room then room = cap - running end
  end
  if room < 0 then room = 0 end
  return room, period, cap > 0
end
-- One job of qname started now by the worker member.
local function flow_took(slots, rkey, qname, member, period, capped)
  if period > 0 then
    local stamp = string.format('%.0f', flow_now())
    redis.call('ZADD', rkey, stamp, stamp .. ' ' .. member)
    redis.call('PEXPIRE', rkey, math.floor(period / 1000) + 1000)
  end
  if capped then redis.call('HSET', slots, member, qname) end
end
"#
    };
}

/// KEYS: working key, n queue keys in priority order, their n enqueue-time
/// record keys, their n rate-log keys, the limits hash, the slots hash.
/// ARGV: run_at (JSON string), worker name (JSON string), queue names
/// (JSON strings, one per queue key), the same queue names raw, the
/// worker's member. Returns `{index, payload, enqueue ms or -1}` (1-based
/// queue index) or nil. Pops the head of the queue's enqueue-time record
/// with the job if it is in step, else drops the record (the time is
/// unknown). A queue at its limits (see `flow_lua`) is skipped; the
/// worker's stale slot, if any, is released first (a worker claims only
/// when idle).
pub(crate) static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        record_lua!(),
        flow_lua!(),
        r#"
local n = (#KEYS - 3) / 3
local limits, slots, member = KEYS[3 * n + 2], KEYS[3 * n + 3], ARGV[3 + 2 * n]
redis.call('HDEL', slots, member)
local flow_on = flow_limited(limits)
for i = 2, n + 1 do
  local room, period, capped = 1, 0, false
  if flow_on then room, period, capped = flow_room(limits, slots, KEYS[i + 2 * n], ARGV[n + i + 1], 1) end
  if room > 0 then
    local item = redis.call('LPOP', KEYS[i])
    if item then
      local body = item
      if not pcall(cjson.decode, item) then body = cjson.encode(item) end
      redis.call('SET', KEYS[1], '{"run_at":' .. ARGV[1] .. ',"queue":' .. ARGV[i + 1] ..
        ',"worker":' .. ARGV[2] .. ',"payload":' .. body .. '}')
      if flow_on then flow_took(slots, KEYS[i + 2 * n], ARGV[n + i + 1], member, period, capped) end
      local r = rec_popped(KEYS[i + n], KEYS[i], 1)
      return {i - 1, item, r and rec_ms(r[1]) or -1}
    end
  end
end
return false
"#
    ))
});

/// KEYS: the n slots' working keys, then m queue keys in priority order,
/// their m enqueue-time record keys, their m rate-log keys, the limits
/// hash, the slots hash.
/// ARGV: n, run_at (JSON string), n worker names (JSON strings), m queue
/// names (JSON strings), the same m names raw, the n workers' members.
/// Pops up to n jobs (`LPOP key count`), one per slot, no more from a
/// queue than its limits leave room for, and records each as its slot's
/// working-on entry, popping as many enqueue-time records as [`CLAIM`]
/// does. Returns `{{slot, queue index, payload, enqueue ms or -1}, …}`
/// (0-based indexes).
pub(crate) static CLAIM_BATCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        record_lua!(),
        flow_lua!(),
        r#"
local n = tonumber(ARGV[1])
local m = (#KEYS - n - 2) / 3
local limits, slots = KEYS[#KEYS - 1], KEYS[#KEYS]
for s = 1, n do redis.call('HDEL', slots, ARGV[2 + n + 2 * m + s]) end
local flow_on = flow_limited(limits)
local out = {}
local slot = 1
for q = n + 1, n + m do
  if slot > n then break end
  local qname = ARGV[2 + m + q]
  local room, period, capped = n - slot + 1, 0, false
  if flow_on then room, period, capped = flow_room(limits, slots, KEYS[q + 2 * m], qname, room) end
  local items = nil
  if room > 0 then items = redis.call('LPOP', KEYS[q], room) end
  if items then
    local times = rec_popped(KEYS[q + m], KEYS[q], #items) or {}
    for k, item in ipairs(items) do
      local body = item
      if not pcall(cjson.decode, item) then body = cjson.encode(item) end
      redis.call('SET', KEYS[slot], '{"run_at":' .. ARGV[2] .. ',"queue":' .. ARGV[2 + q] ..
        ',"worker":' .. ARGV[2 + slot] .. ',"payload":' .. body .. '}')
      if flow_on then flow_took(slots, KEYS[q + 2 * m], qname, ARGV[2 + n + 2 * m + slot], period, capped) end
      table.insert(out, {slot - 1, q - n - 1, item, rec_ms(times[k])})
      slot = slot + 1
    end
  end
end
return out
"#
    ))
});

/// KEYS: `queues` set, queue list, its enqueue-time record key. ARGV: queue
/// name, payload, wake-up channel, "head" or "tail", enqueue ms.
/// `SADD` + `RPUSH` (or `LPUSH`) + the enqueue record at the same end (if
/// in step) + `PUBLISH`.
pub(crate) static PUSH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        record_lua!(),
        r#"
redis.call('SADD', KEYS[1], ARGV[1])
local cmd = 'RPUSH'
if ARGV[4] == 'head' then cmd = 'LPUSH' end
rec_pushed(KEYS[3], redis.call(cmd, KEYS[2], ARGV[2]), ARGV[5], cmd)
redis.call('PUBLISH', ARGV[3], ARGV[1])
return 1
"#
    ))
});

/// KEYS: `queues` set, then for each of the d distinct queues (in order of
/// first appearance) its list and its enqueue-time record key. ARGV:
/// wake-up channel, enqueue ms, d, the d queue names, then (queue name,
/// payload) pairs in order. Pushes each payload to
/// the tail of its queue with its enqueue record (one `RPUSH` per run of
/// up to 1,000 consecutive jobs for the same queue, and one for their
/// records), then adds and announces each queue once. Returns how many
/// were pushed.
pub(crate) static PUSH_BATCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        record_lua!(),
        r#"
local d = tonumber(ARGV[3])
local index = {}
for j = 1, d do index[ARGV[3 + j]] = j end
local seen = {}
local order = {}
local k = 0
local i = 4 + d
-- A run of consecutive jobs for one queue is pushed with one RPUSH per
-- 1,000 jobs (and, if the record is in step, one RPUSH of as many stamps).
while i <= #ARGV do
  local q = ARGV[i]
  local qkey = KEYS[2 * index[q]]
  local rkey = KEYS[2 * index[q] + 1]
  local n = rec_len(rkey)
  local in_step = n == redis.call('LLEN', qkey)
  local items, stamps = {}, {}
  while i <= #ARGV and ARGV[i] == q do
    items[#items + 1] = ARGV[i + 1]
    stamps[#stamps + 1] = ARGV[2]
    i = i + 2
    if #items == 1000 or i > #ARGV or ARGV[i] ~= q then
      redis.call('RPUSH', qkey, unpack(items))
      if in_step then redis.pcall('RPUSH', rkey, unpack(stamps)) end
      k = k + #items
      items, stamps = {}, {}
    end
  end
  if not in_step then rec_unstep(rkey, n) end
  if not seen[q] then
    seen[q] = true
    table.insert(order, q)
  end
end
for _, q in ipairs(order) do
  redis.call('SADD', KEYS[1], q)
end
for _, q in ipairs(order) do
  redis.call('PUBLISH', ARGV[1], q)
end
return k
"#
    ))
});

/// KEYS: queue list, its enqueue-time record key. ARGV: count, payload.
/// `LREM` with the same `count`. If the record is in step, the records at
/// the removed copies' positions (found first with `LPOS`, from the head
/// for `count >= 0`, from the tail for `count < 0`) go too; else the
/// record is dropped, as it is when the queue is left empty. Returns how
/// many went.
pub(crate) static REMOVE_FROM_QUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        record_lua!(),
        r#"
local count = tonumber(ARGV[1])
local rlen = rec_len(KEYS[2])
local at = nil
if rlen == redis.call('LLEN', KEYS[1]) and rlen > 0 then
  -- LPOS's COUNT 0 means all; a count beyond the length means all too
  -- (and stays a small integer for Redis to parse).
  local c = math.abs(count)
  if c > rlen then c = 0 end
  if count < 0 then
    at = redis.call('LPOS', KEYS[1], ARGV[2], 'RANK', -1, 'COUNT', c)
  else
    at = redis.call('LPOS', KEYS[1], ARGV[2], 'COUNT', c)
  end
end
local n = redis.call('LREM', KEYS[1], ARGV[1], ARGV[2])
if n > 0 then
  if at then
    for _, i in ipairs(at) do redis.pcall('LSET', KEYS[2], i, '-') end
    rec_drop_marked(KEYS[2], KEYS[1])
  else
    rec_unstep(KEYS[2], rlen)
  end
end
return n
"#
    ))
});

/// KEYS: n queue lists, then their n enqueue-time record keys. Returns
/// `{length, head enqueue ms or -1}` per queue: the head's time is known
/// only while the record is in step. An empty queue's record key is
/// dropped (one a foreign pop left behind).
pub(crate) static QUEUE_STATS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        record_lua!(),
        r#"
local n = #KEYS / 2
local out = {}
for i = 1, n do
  local len = redis.call('LLEN', KEYS[i])
  local at = -1
  if len == 0 then
    redis.pcall('DEL', KEYS[i + n])
  elseif rec_len(KEYS[i + n]) == len then
    at = rec_ms(redis.pcall('LINDEX', KEYS[i + n], 0))
  end
  out[i] = {len, at}
end
return out
"#
    ))
});

/// KEYS: delayed:<s>, delayed_queue_schedule, `queues` set, queue list, its
/// enqueue-time record key, timestamps:<item>. ARGV: s, item, queue name,
/// wake-up channel, enqueue ms. Moves one copy of the item from
/// the bucket to the tail of the queue ("run it now"), keeping the
/// `timestamps:` set and the schedule in step. Returns 1 when moved.
pub(crate) static PROMOTE_ONE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        record_lua!(),
        r#"
if redis.call('LREM', KEYS[1], 1, ARGV[2]) ~= 1 then return 0 end
if not redis.call('LPOS', KEYS[1], ARGV[2]) then
  redis.pcall('SREM', KEYS[6], 'delayed:' .. ARGV[1])
end
if redis.call('LLEN', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
redis.call('SADD', KEYS[3], ARGV[3])
rec_pushed(KEYS[5], redis.call('RPUSH', KEYS[4], ARGV[2]), ARGV[5], 'RPUSH')
redis.call('PUBLISH', ARGV[4], ARGV[3])
return 1
"#
    ))
});

/// KEYS: delayed:<s>, delayed_queue_schedule, timestamps:<item>. ARGV: s,
/// item. Removes one copy of the item from that bucket only, keeping the
/// `timestamps:` set and the schedule in step. Returns 1 when removed.
pub(crate) static REMOVE_DELAYED_AT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('LREM', KEYS[1], 1, ARGV[2]) ~= 1 then return 0 end
if not redis.call('LPOS', KEYS[1], ARGV[2]) then
  redis.pcall('SREM', KEYS[3], 'delayed:' .. ARGV[1])
end
if redis.call('LLEN', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
return 1
"#,
    )
});

/// KEYS: `delayed:<s>` lists. Returns each one's `LLEN`, 0 for a key of
/// another type.
pub(crate) static BUCKET_LENGTHS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local out = {}
for i = 1, #KEYS do
  local n = redis.pcall('LLEN', KEYS[i])
  if type(n) ~= 'number' then n = 0 end
  out[i] = n
end
return out
"#,
    )
});

/// KEYS: working key, failed list, stat:failed, the slots hash. ARGV:
/// run_at, queue and worker name (JSON strings, as given to the claim), the
/// claimed item, the failed entry, the worker's member. Moves an item that
/// a claim recorded, but that is not valid UTF-8, from the working-on
/// record to the failed list, releasing the worker's concurrency slot:
/// only if the record is still the one the claim wrote (rebuilt here the
/// same way). Returns 1 when moved, 0 when the record changed meanwhile.
pub(crate) static DIVERT_CLAIMED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local item = ARGV[4]
local body = item
if not pcall(cjson.decode, item) then body = cjson.encode(item) end
local record = '{"run_at":' .. ARGV[1] .. ',"queue":' .. ARGV[2] .. ',"worker":' .. ARGV[3] ..
  ',"payload":' .. body .. '}'
if redis.call('GET', KEYS[1]) ~= record then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[4], ARGV[6])
redis.call('RPUSH', KEYS[2], ARGV[5])
-- A counter that another client broke must not undo the move.
redis.pcall('INCR', KEYS[3])
return 1
"#,
    )
});

/// KEYS: timestamps:<item>, delayed:<s>, delayed_queue_schedule.
/// ARGV: "delayed:<s>", item, s. Returns 1 if scheduled, 0 for a duplicate.
pub(crate) static SCHEDULE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[3])
return 1
"#,
    )
});

/// KEYS: delayed_queue_schedule, then the `delayed:<m>` key of each
/// member m in ARGV. Returns each key's type; a member whose key is gone
/// is removed from the schedule in the same step.
pub(crate) static BUCKET_TYPES: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local out = {}
for i = 1, #ARGV do
  local kind = redis.call('TYPE', KEYS[i + 1])['ok']
  if kind == 'none' then redis.call('ZREM', KEYS[1], ARGV[i]) end
  out[i] = kind
end
return out
"#,
    )
});

/// KEYS: timestamps:<item>, delayed_queue_schedule, then the list key of
/// each index member in ARGV. ARGV: item, then the members (`delayed:<s>`)
/// read from the index. Removes every copy of the item from the bucket of
/// each member still in the index. Returns the bucket seconds it was
/// removed from.
pub(crate) static REMOVE_DELAYED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local out = {}
for i = 2, #ARGV do
  local m = ARGV[i]
  local list = KEYS[i + 1]
  if redis.call('SREM', KEYS[1], m) == 1 then
    local n = redis.call('LREM', list, 0, ARGV[1])
    if n > 0 then table.insert(out, string.sub(m, 9)) end
    if redis.call('LLEN', list) == 0 then
      redis.call('DEL', list)
      redis.call('ZREM', KEYS[2], string.sub(m, 9))
    end
  end
end
return out
"#,
    )
});

/// KEYS: delayed:<s>, delayed_queue_schedule, queues set, failed list,
/// then for each item its `timestamps:<item>` key, its target queue's list
/// and that queue's enqueue-time record key (for mode "f", any keys of the
/// namespace: they are not touched). ARGV: s, wakeup channel, enqueue ms,
/// then triples (item, mode, target):
/// mode "q" pushes the item to queue `target`; mode "f" pushes `target`
/// (a failed entry) to the failed list. Each item is moved only if it is
/// still in the bucket. Returns one 0/1 flag per item.
pub(crate) static PROMOTE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        record_lua!(),
        r#"
local flags = {}
local marker = 'delayed:' .. ARGV[1]
local j = 2
for i = 4, #ARGV, 3 do
  local item, mode, target = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  j = j + 3
  if redis.call('LREM', KEYS[1], 1, item) == 1 then
    if not redis.call('LPOS', KEYS[1], item) then
      -- Another client's index key of the wrong type must not stop the move.
      redis.pcall('SREM', KEYS[j], marker)
    end
    if mode == 'q' then
      redis.call('SADD', KEYS[3], target)
      local len = redis.call('RPUSH', KEYS[j + 1], item)
      rec_pushed(KEYS[j + 2], len, ARGV[3], 'RPUSH')
      redis.call('PUBLISH', ARGV[2], target)
    else
      redis.call('RPUSH', KEYS[4], target)
    end
    table.insert(flags, 1)
  else
    table.insert(flags, 0)
  end
end
if redis.call('LLEN', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
return flags
"#
    ))
});

/// KEYS: failed list, queue list, queues set, the queue's enqueue-time
/// record key. ARGV: entry, payload, queue, wakeup channel, enqueue ms.
/// Removes the entry and, if it was there, enqueues the payload.
pub(crate) static RETRY_FAILED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        record_lua!(),
        r#"
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  redis.call('SADD', KEYS[3], ARGV[3])
  rec_pushed(KEYS[4], redis.call('RPUSH', KEYS[2], ARGV[2]), ARGV[5], 'RPUSH')
  redis.call('PUBLISH', ARGV[4], ARGV[3])
  return 1
end
return 0
"#
    ))
});

/// KEYS: failed, target queue list, queues set, the queue's enqueue-time
/// record key.
/// ARGV: index, entry as listed, its stored bytes when those differ (an
/// escaped non-UTF-8 entry; else the same), tombstone, then for a retry
/// ("retry" in ARGV[5]): payload, queue name, wakeup channel, enqueue ms.
/// Removes the element at the index only if it equals the entry: it is
/// overwritten with the tombstone (a value no entry has) and that one
/// element removed, so an equal entry elsewhere is never touched.
/// Returns 1 if removed (and pushed), else 0.
pub(crate) static TAKE_FAILED_AT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        record_lua!(),
        r#"
local index = tonumber(ARGV[1])
local current = redis.call('LINDEX', KEYS[1], index)
if not current or (current ~= ARGV[2] and current ~= ARGV[3]) then return 0 end
redis.call('LSET', KEYS[1], index, ARGV[4])
redis.call('LREM', KEYS[1], 1, ARGV[4])
if ARGV[5] == 'retry' then
  redis.call('SADD', KEYS[3], ARGV[7])
  rec_pushed(KEYS[4], redis.call('RPUSH', KEYS[2], ARGV[6]), ARGV[9], 'RPUSH')
  redis.call('PUBLISH', ARGV[8], ARGV[7])
end
return 1
"#
    ))
});

/// KEYS: workers set, ping, started, working, stat:processed:<name>,
/// stat:failed:<name>, target list, queues set, stat:failed, the queue's
/// enqueue-time record key, the slots hash (the worker's concurrency slot,
/// if it holds one, is released), the task-slots hash (likewise its task
/// slot).
/// ARGV: member, expected working-on value ("" for none), mode ("none",
/// "requeue", "fail"), value to push, queue name, wakeup channel, enqueue
/// ms. A requeued job goes to the queue's head and is recorded as enqueued
/// now (if the record is in step).
/// Returns -1 if the working-on value changed since it was read (the caller
/// retries), else how many of the worker's keys existed.
pub(crate) static CLEAN_WORKER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        record_lua!(),
        r#"
local current = redis.call('GET', KEYS[4])
if (current or '') ~= ARGV[2] then return -1 end
local found = redis.call('SREM', KEYS[1], ARGV[1]) + redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
redis.call('DEL', KEYS[5], KEYS[6])
redis.call('HDEL', KEYS[11], ARGV[1])
redis.pcall('HDEL', KEYS[12], ARGV[1])
if current then
  if ARGV[3] == 'requeue' then
    rec_pushed(KEYS[10], redis.call('LPUSH', KEYS[7], ARGV[4]), ARGV[7], 'LPUSH')
    redis.call('SADD', KEYS[8], ARGV[5])
    redis.call('PUBLISH', ARGV[6], ARGV[5])
  elseif ARGV[3] == 'fail' then
    redis.call('RPUSH', KEYS[7], ARGV[4])
    redis.call('INCR', KEYS[9])
  end
end
return found
"#
    ))
});

/// KEYS: workers set, ping key, `workers:heartbeat` hash. ARGV: member, ping
/// JSON. Writes the ping (a liveness probe, see `stale_workers`) only if the
/// member is registered, has no ping key and no Ruby heartbeat. Returns 1
/// when it wrote it.
pub(crate) static PROBE_PING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"#,
    )
});

/// KEYS: lock key. ARGV: value, ttl ms. Extends the TTL if the value matches.
pub(crate) static RENEW_LOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#,
    )
});

/// KEYS: lock key. ARGV: value. Deletes the key if the value matches.
pub(crate) static RELEASE_LOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#,
    )
});

/// KEYS: leader key. ARGV: name, ttl ms. Takes the lock if free, renews it
/// if `name` holds it. Returns 1 when `name` leads.
pub(crate) static ACQUIRE_LEADER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#,
    )
});

/// KEYS: lock key, `queues` set, queue list, its enqueue-time record key.
/// ARGV: lock value, ttl ms, queue name, payload, wake-up channel, enqueue
/// ms. Takes the lock with `SET NX PX`
/// and, only if it was free, pushes the payload and announces the queue.
/// Returns 1 when pushed.
pub(crate) static PUSH_ONCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        record_lua!(),
        r#"
if not redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then
  return 0
end
redis.call('SADD', KEYS[2], ARGV[3])
rec_pushed(KEYS[4], redis.call('RPUSH', KEYS[3], ARGV[4]), ARGV[6], 'RPUSH')
redis.call('PUBLISH', ARGV[5], ARGV[3])
return 1
"#
    ))
});

/// KEYS: key. ARGV: increment, ttl ms. `INCRBY` then `PEXPIRE`; returns
/// the new value (an error reply when the value is not an integer).
pub(crate) static INCR_LOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return v
"#,
    )
});

/// The Lua function the by-class removals match with (ARGV[1] is the
/// class): an item containing neither the class literally nor a backslash
/// cannot name it; any other is decoded, and matches when it is an object
/// whose `class` is the class. Undecodable items never match.
macro_rules! class_match_lua {
    () => {
        r#"
local class = ARGV[1]
local function decode_of_class(item)
  if not string.find(item, class, 1, true) and not string.find(item, '\\', 1, true) then return nil end
  local ok, job = pcall(cjson.decode, item)
  if ok and type(job) == 'table' and job['class'] == class then return job end
  return nil
end
"#
    };
}

/// KEYS: queue list, its enqueue-time record key. ARGV: class, how many
/// items from the tail were
/// already visited, page size, tombstone (a value no payload has).
/// Looks at the next page of up to `page size` items, walking from the
/// tail towards the head, and removes those of the class (marked with the
/// tombstone by index, then one `LREM` from the tail), and their
/// enqueue-time records if in step (else drops the record). Returns `{removed,
/// looked at}`; fewer looked at than the page size means the head was reached.
pub(crate) static REMOVE_BY_CLASS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        class_match_lua!(),
        record_lua!(),
        r#"
local visited, page, tomb = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local len = redis.call('LLEN', KEYS[1])
if visited >= len then return {0, 0} end
local rlen = rec_len(KEYS[2])
local items = redis.call('LRANGE', KEYS[1], -(visited + page), -(visited + 1))
local first = len - visited - #items
local removed = 0
for i, item in ipairs(items) do
  if decode_of_class(item) then
    local at = first + i - 1
    if at > len / 2 then at = at - len end
    redis.call('LSET', KEYS[1], at, tomb)
    if rlen == len then redis.pcall('LSET', KEYS[2], at, '-') end
    removed = removed + 1
  end
end
if removed > 0 then
  redis.call('LREM', KEYS[1], -removed, tomb)
  if rlen == len then
    rec_drop_marked(KEYS[2], KEYS[1])
  else
    rec_unstep(KEYS[2], rlen)
  end
end
return {removed, #items}
"#
    ))
});

/// KEYS: delayed_queue_schedule, one bucket `delayed:<m>`, then the
/// `timestamps:<item>` key of each distinct item in ARGV. ARGV: class,
/// queue, m, then the distinct items read from the bucket. Removes from the
/// bucket every item of the class bound for the queue (or naming no
/// queue), keeping the `timestamps:` sets and the schedule in step, and
/// drops the bucket if it empties. Returns the number removed, or -1 (and
/// changes nothing) when the bucket now holds an item not in ARGV: read it
/// again.
pub(crate) static REMOVE_BUCKET_BY_CLASS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        class_match_lua!(),
        r#"
local queue, m, list = ARGV[2], ARGV[3], KEYS[2]
local index = {}
for i = 4, #ARGV do index[ARGV[i]] = i - 1 end
local items = redis.call('LRANGE', list, 0, -1)
for _, item in ipairs(items) do
  if not index[item] then return -1 end
end
local removed = 0
local done = {}
for _, item in ipairs(items) do
  if not done[item] then
    done[item] = true
    local job = decode_of_class(item)
    if job then
      local q = job['queue']
      if type(q) ~= 'string' or not string.find(q, '%S') or q == queue then
        removed = removed + redis.call('LREM', list, 0, item)
        redis.call('SREM', KEYS[index[item]], 'delayed:' .. m)
      end
    end
  end
end
if redis.call('LLEN', list) == 0 then
  redis.call('DEL', list)
  redis.call('ZREM', KEYS[1], m)
end
return removed
"#
    ))
});

/// Flow control per task class (`TaskFlowStore::acquire_task_start`).
/// KEYS: the class's rate-log key (a sorted set, as a queue's: score and
/// member the server's time in µs, the member followed by the worker's
/// member), the task-slots hash (worker member -> class).
/// ARGV: class, worker member, rate max (0: none), rate period ms, cap (0:
/// none).
/// Releases the worker's task slot, then admits the start if both limits
/// have room (logging it and holding a slot for the worker, each only when
/// that limit is set). Returns `{0, 0}` when admitted, `{1, ms}` when the
/// rate limit is full (the next start frees in `ms`), `{2, 0}` when the cap
/// is full. A key of another type (another client's doing) is replaced:
/// it holds nothing resq could count.
pub(crate) static ACQUIRE_TASK_START: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local rkey, slots = KEYS[1], KEYS[2]
local class, member = ARGV[1], ARGV[2]
local max, period, cap = tonumber(ARGV[3]), tonumber(ARGV[4]) * 1000, tonumber(ARGV[5])
local st = redis.call('TYPE', slots).ok
if st ~= 'hash' and st ~= 'none' then redis.call('DEL', slots) end
redis.call('HDEL', slots, member)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if max > 0 then
  local rt = redis.call('TYPE', rkey).ok
  if rt ~= 'zset' and rt ~= 'none' then redis.call('DEL', rkey) end
  redis.call('ZREMRANGEBYSCORE', rkey, '-inf', string.format('%.0f', now - period))
  if redis.call('ZCARD', rkey) >= max then
    local oldest = redis.call('ZRANGE', rkey, 0, 0, 'WITHSCORES')
    local wait = period
    if oldest[2] then wait = tonumber(oldest[2]) + period - now end
    if wait < 1000 then wait = 1000 end
    return {1, math.ceil(wait / 1000)}
  end
end
if cap > 0 then
  local running = 0
  for _, c in ipairs(redis.call('HVALS', slots)) do
    if c == class then running = running + 1 end
  end
  if running >= cap then return {2, 0} end
  redis.call('HSET', slots, member, class)
end
if max > 0 then
  local stamp = string.format('%.0f', now)
  redis.call('ZADD', rkey, stamp, stamp .. ' ' .. member)
  redis.call('PEXPIRE', rkey, math.floor(period / 1000) + 1000)
end
return {0, 0}
"#,
    )
});
