
-- Keys ------------------------------------------------------------------------
-- Provides: thread records (thread_record, check_thread), the TAG value of an
-- id (tag_of, tag_param, id_param), uuid6 times, and every key name lgprune
-- reads or deletes (nothing else joins key parts).
-- Assumes: core (fail, show). `ctx` is a context (cp, wp); `thread` a thread
-- record; `d` a checkpoint doc { key, ns, id }; ns and ids as stored.

local EMPTY_ID = '00000000-0000-0000-0000-000000000000' -- how the saver stores thread ""
local ROOT_NS = '__empty__' -- how the saver stores namespace ""
local ZSET_PREFIX = 'write_keys_zset'
local MAX_TAG_BYTES = 4096 -- longer TAG values are not matched by RediSearch
local UUID_EPOCH = 122192928000000000 -- 1582-10-15 to 1970-01-01 in 100 ns
local DEFAULT_GRACE_MS = 600000 -- keys younger than this may belong to a write in flight
-- lgprune's own key, outside the saver's prefixes: a hash of sweep rules, each
-- to the server time (ms) at which its last complete pass began.
local WATERMARKS = 'lgprune:watermarks'

-- True when s is well-formed UTF-8 (JSON documents cannot hold anything else).
local function is_utf8(s)
  local i, n = 1, #s
  while i <= n do
    local c = s:byte(i)
    local len
    if c < 0x80 then
      len = 1
    elseif c >= 0xC2 and c <= 0xDF then
      len = 2
    elseif c >= 0xE0 and c <= 0xEF then
      len = 3
    elseif c >= 0xF0 and c <= 0xF4 then
      len = 4
    else
      return false
    end
    for j = i + 1, i + len - 1 do
      local b = s:byte(j)
      if b == nil or b < 0x80 or b > 0xBF then
        return false
      end
    end
    i = i + len
  end
  return true
end

-- The value RediSearch indexed for a thread id: TAG values are C strings
-- (they end at a NUL byte), split on ',' and trimmed of white space, so
-- query the longest piece and confirm each hit.
local function tag_of(thread_id)
  if not thread_id:find('[,%z%s]') then
    return thread_id -- one piece, nothing to trim (checkpoint ids, most thread ids)
  end
  local best = ''
  for piece in (thread_id:match('^[^%z]*') .. ','):gmatch('([^,]*),') do
    piece = piece:match('^%s*(.-)%s*$')
    if #piece > #best then
      best = piece
    end
  end
  return best
end

-- A TAG value as a query parameter: RediSearch reads backslash escapes in
-- parameter values too (`\\:` finds the tag `:`), so a backslash must be doubled.
local function tag_param(tag)
  if not tag:find('\\', 1, true) then
    return tag -- most ids: no copy made
  end
  return (tag:gsub('\\', '\\\\'))
end

-- The query parameter that finds a checkpoint's writes by its id, or nil
-- when RediSearch cannot match that id.
local function id_param(id)
  local tag = tag_of(id)
  if tag == '' or #id > MAX_TAG_BYTES then
    return nil
  end
  return tag_param(tag)
end

-- The thread a thread id names, as a record: `id` as stored, `tag` the query
-- parameter that finds its TAG value, `plain` when that value is the whole
-- id (no comma, NUL or edge white space): then no other thread's tag is its
-- case-folded equal and shorter, which key-form proofs rely on. Or nil and
-- why it cannot be pruned.
local function thread_record(thread_id)
  if thread_id == nil then
    return nil, 'missing thread id'
  end
  if #thread_id > MAX_TAG_BYTES then
    return nil, 'thread id is ' .. #thread_id .. ' bytes; RediSearch cannot match TAG values over '
      .. MAX_TAG_BYTES .. ' bytes, so it cannot be pruned safely'
  end
  if not is_utf8(thread_id) then
    return nil, 'thread id is not valid UTF-8; the saver cannot have stored it'
  end
  local stored = thread_id
  if stored == '' then
    stored = EMPTY_ID
  end
  local tag = tag_of(stored)
  if tag == '' then
    return nil, 'thread id ' .. show(thread_id) .. ' has nothing RediSearch indexes '
      .. '(only commas and white space before any NUL byte), so its checkpoints cannot be found'
  end
  return { id = stored, tag = tag_param(tag), plain = tag == stored }
end

-- thread_record, failing the call for an id that cannot be pruned.
local function check_thread(thread_id)
  local thread, why = thread_record(thread_id)
  if not thread then
    fail('BADARG', why)
  end
  return thread
end

-- Milliseconds since the Unix epoch in a uuid6 checkpoint id; nil for other ids.
local function uuid6_ms(id)
  local high, mid, low = id:match('^(%x%x%x%x%x%x%x%x)%-(%x%x%x%x)%-6(%x%x%x)%-')
  if not high then
    return nil
  end
  local ticks = tonumber(high, 16) * 268435456 + tonumber(mid, 16) * 4096 + tonumber(low, 16)
  return (ticks - UUID_EPOCH) / 10000
end

-- True when `id` is a uuid6 older than `before` (ms): younger or undated
-- keys may belong to a checkpoint that is still being written.
local function older(id, before)
  local ms = id and uuid6_ms(id)
  return ms ~= nil and ms < before
end

-- Whether s begins with prefix.
local function starts_with(s, prefix)
  return s:find(prefix, 1, true) == 1 -- (no substring made: this runs per listed key)
end

-- <cp>:<thread>: the start of the keys of a thread's checkpoints.
local function thread_prefix(ctx, thread)
  return ctx.cp .. ':' .. thread.id .. ':'
end

-- <cp>:<thread>:<ns>: the start of the keys of a namespace's checkpoints.
local function checkpoint_prefix(ctx, thread, ns)
  return thread_prefix(ctx, thread) .. ns .. ':'
end

-- <cp>:<thread>:<ns>:<id>, a checkpoint.
local function checkpoint_key(ctx, thread, ns, id)
  return checkpoint_prefix(ctx, thread, ns) .. id
end

-- <wp>:<thread>:<ns>:<id>: the start of every write key of a checkpoint.
local function write_prefix(ctx, thread, d)
  return ctx.wp .. ':' .. thread.id .. ':' .. d.ns .. ':' .. d.id .. ':'
end

-- write_keys_zset:<thread>:<ns>:<id>, the saver's registry of a checkpoint's writes.
local function registry_key(thread, d)
  return ZSET_PREFIX .. ':' .. thread.id .. ':' .. d.ns .. ':' .. d.id
end

-- <cp>_latest:, the start of every latest pointer (a sweep's SCAN looks for them).
local function latest_start(ctx)
  return ctx.cp .. '_latest:'
end

-- <cp>_latest:<thread>:<ns>, the key of a namespace's newest checkpoint.
local function latest_key(ctx, thread, ns)
  return latest_start(ctx) .. thread.id .. ':' .. ns
end

-- The checkpoint whose writes registry `key` (write_keys_zset:<stem>) lists,
-- and the start of those writes' keys: <cp>:<stem>, <wp>:<stem>: (the stem
-- <thread>:<ns>:<id> is not split: its parts hold colons).
local function registry_owner(ctx, key)
  local stem = key:sub(#ZSET_PREFIX + 2)
  return ctx.cp .. ':' .. stem, ctx.wp .. ':' .. stem .. ':'
end

-- The doc of a root checkpoint key: the key must be exactly <prefix><id>
-- (prefix = checkpoint_prefix(thread, ROOT_NS)) with a non-empty id free of
-- colons, a form no other thread's key can take when the key was found by a
-- query on the tag of a plain thread: another thread's extra ':'-separated
-- part would leave a colon in <id>, and a thread cut short at one of our
-- colons has a shorter (case-folded) tag, unlike ours when ours is the whole
-- id. (For a thread that is not plain, a comma lets another thread's namespace
-- spell our root: see proven_root.) Else nil.
local function root_doc(key, prefix)
  if starts_with(key, prefix) and #key > #prefix and not key:find(':', #prefix + 1, true) then
    return { key = key, ns = ROOT_NS, id = key:sub(#prefix + 1) }
  end
  return nil
end

-- Escape glob characters for SCAN MATCH.
local function glob_escape(s)
  return (s:gsub('([%*%?%[%]\\])', '\\%1'))
end
