#!lua name=lgprune
--[[
lgprune: keep the newest N checkpoints of a LangGraph thread stored by
langgraph-checkpoint-redis 0.5.x, and delete the rest, inside Redis.

Data layout (values are storage-safe: thread "" is stored as EMPTY_ID,
namespace "" as ROOT_NS):
  <cp>:<thread>:<ns>:<checkpoint_id>               JSON checkpoint, index <cp>
  <wp>:<thread>:<ns>:<checkpoint_id>:<task>:<idx>  JSON write, index <wp>
  write_keys_zset:<thread>:<ns>:<checkpoint_id>    zset registry of its writes
  <cp>_latest:<thread>:<ns>                        key of the newest checkpoint
Thread ids and namespaces contain colons, so a thread is never found by
parsing or globbing keys: it is looked up through the index (a TAG query,
passed as a parameter, so nothing in the id is query syntax), and every hit
is confirmed against the document's own thread_id and checkpoint_id,
byte for byte, and against the exact key the saver would have built for it.

Rules, per thread:
  * per namespace, keep the newest `keep` checkpoints by checkpoint_id;
  * a subgraph namespace whose checkpoints are all older than the oldest
    kept root checkpoint belongs to turns that are gone: it goes whole;
  * DeltaChannel: every kept checkpoint also keeps its parent chain back to
    the nearest ancestor that stores a value for each delta channel it must
    rebuild (what BaseCheckpointSaver.get_delta_channel_history walks);
  * a deleted checkpoint takes its writes (found through the writes index),
    its write_keys_zset, and, when it was the newest of its namespace, the
    namespace's latest pointer.
Work per call is bounded by a budget; a caller repeats while `more` is 1.
Everything is validated and read before the first delete.
]]

local VERSION = '0.1.0'
-- Which code this is: the Python package loads the library with this set to
-- a hash of the file, so a cheap probe tells its own code from any other.
local BUILD = 'dev'
-- redis.call is not reachable while the library loads, so wrap it
local function rcall(...)
  return redis.call(...)
end

local EMPTY_ID = '00000000-0000-0000-0000-000000000000'
local ROOT_NS = '__empty__'
local ZSET_PREFIX = 'write_keys_zset'
local DEFAULT_BUDGET = 2000
local MAX_BUDGET = 100000
local MAX_TAG_BYTES = 4096 -- longer TAG values are not matched by RediSearch
local MAX_LIMIT = 1000000 -- RediSearch MAXSEARCHRESULTS default (redis-stack-server: 10000)
local UNLINK_BATCH = 500 -- never unpack an unbounded list
local WRITES_CHUNK = 64 -- checkpoint ids per writes query
local MIN_BUDGET = 10 -- enough for any call to make progress
local SCAN_COUNT = 50 -- keys per SCAN step of a sweep
local VISIT_COST = 10 -- budget units a sweep charges per thread visit
local LIST_COST = 40 -- ... and more when the visit lists and plans the thread
local CHECK_COST = 3 -- ... per orphan check
local DEFAULT_GRACE_MS = 600000 -- orphans younger than this may still be in flight
local UUID_EPOCH = 122192928000000000 -- 1582-10-15 to 1970-01-01 in 100 ns

-- Errors -------------------------------------------------------------------

local Failure = {}

-- Abort the call with 'LGPRUNE <msg>'. Only ever raised before the first write.
local function fail(msg)
  error(setmetatable({ msg = msg }, Failure), 0)
end

-- Wrap a registered function so that fail() becomes a clean error reply.
local function entry(body)
  return function(keys, args)
    local ok, res = pcall(body, keys, args)
    if ok then
      return res
    end
    if getmetatable(res) == Failure then
      return redis.error_reply('LGPRUNE ' .. res.msg)
    end
    error(res, 0)
  end
end

-- A short printable rendering of a user value for error messages.
local function show(s)
  if s == nil then
    return 'nothing'
  end
  if #s > 40 then
    s = s:sub(1, 40) .. '...'
  end
  return string.format('%q', s)
end

-- Arguments ----------------------------------------------------------------

-- Parse a non-negative decimal integer; values above `max` are clamped to it.
local function parse_count(name, s, max)
  if type(s) ~= 'string' or not s:match('^%d+$') then
    fail(name .. ' must be a non-negative integer, got ' .. show(s))
  end
  local n = tonumber(s)
  if n > max then
    n = max
  end
  return n
end

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
  return (tag:gsub('\\', '\\\\'))
end

-- The stored id of a thread id and the query parameter that finds its tag,
-- or nil and why it cannot be pruned.
local function thread_key(thread_id)
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
  return stored, tag_param(tag)
end

-- thread_key, failing the call for an id that cannot be pruned.
local function check_thread(thread_id)
  local stored, tag = thread_key(thread_id)
  if not stored then
    fail(tag)
  end
  return stored, tag
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

-- The server's clock in milliseconds.
local function now_ms()
  local t = rcall('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Read options from args[first..]: flags and NAME value pairs, case-insensitive.
-- spec maps an upper-case option name to 'flag', 'count', 'ms' or 'string'.
local function parse_options(args, first, spec)
  local opts = {}
  local i = first
  while i <= #args do
    local name = string.upper(args[i])
    local kind = spec[name]
    if kind == nil then
      fail('unknown option ' .. show(args[i]))
    elseif kind == 'flag' then
      opts[name] = true
      i = i + 1
    else
      local value = args[i + 1]
      if value == nil then
        fail(name .. ' needs a value')
      end
      if kind == 'count' then
        opts[name] = parse_count(name, value, MAX_BUDGET)
      elseif kind == 'ms' then
        opts[name] = parse_count(name, value, 2 ^ 53)
      else
        opts[name] = value
      end
      i = i + 2
    end
  end
  return opts
end

-- Prefixes and index names (defaulting to the saver's), budget and dry run.
local function context(opts)
  local cp = opts.CHECKPOINT_PREFIX or 'checkpoint'
  local wp = opts.WRITE_PREFIX or 'checkpoint_write'
  if cp == '' or wp == '' then
    fail('prefixes must not be empty')
  end
  local budget = opts.BUDGET or DEFAULT_BUDGET
  if budget < MIN_BUDGET then
    fail('BUDGET must be at least ' .. MIN_BUDGET)
  end
  return { cp = cp, wp = wp, budget = budget, dry = opts.DRY_RUN == true }
end

-- What to keep: KEEP newest per namespace; with MAX_AGE also every
-- checkpoint younger than that; with IDLE_TTL nothing of a thread whose
-- newest checkpoint is older than that. Ages come from uuid6 checkpoint ids.
local function policy(keep_arg, opts)
  local now = (opts.MAX_AGE or opts.IDLE_TTL) and now_ms()
  return {
    keep = parse_count('KEEP', keep_arg, 2 ^ 53),
    old_before = opts.MAX_AGE and now - opts.MAX_AGE,
    idle_before = opts.IDLE_TTL and now - opts.IDLE_TTL,
  }
end

-- The same context with a smaller delete budget.
local function with_budget(ctx, budget)
  return { cp = ctx.cp, wp = ctx.wp, budget = budget, dry = ctx.dry, sweep = ctx.sweep, cap = ctx.cap,
    details = ctx.details }
end

-- Redis access ---------------------------------------------------------------

-- The message of an error pcall caught from redis.call (a table) or Lua (a string).
local function error_text(err)
  return tostring(type(err) == 'table' and err.err or err)
end

-- FT.SEARCH with the server's errors turned into ones that say what to do.
local function search(args)
  local ok, res = pcall(rcall, 'FT.SEARCH', unpack(args))
  if ok then
    return res
  end
  local err = error_text(res)
  if err:find('no such index', 1, true) or err:lower():find('unknown index', 1, true) then
    fail('index ' .. show(args[1]) .. ' does not exist: run the saver\'s setup() first, '
      .. 'or pass the prefixes the saver uses (CHECKPOINT_PREFIX, WRITE_PREFIX)')
  end
  if err:find('nknown', 1, true) and err:find('command', 1, true) then
    fail('this server has no RediSearch module: lgprune needs Redis 8 or Redis Stack '
      .. '(search and JSON modules)')
  end
  error(res, 0)
end

-- Fail unless the JSON module answers (probing a key under the checkpoint
-- prefix, which a least-privilege user may read).
local function require_json(ctx)
  local ok, err = pcall(rcall, 'JSON.TYPE', ctx.cp .. ':{lgprune}:probe')
  if not ok then
    local text = error_text(err)
    if text:find('nknown', 1, true) and text:find('command', 1, true) then
      fail('this server has no RedisJSON module: lgprune needs Redis 8 or Redis Stack '
        .. '(search and JSON modules)')
    end
    error(err, 0)
  end
end

-- The most entries one FT.SEARCH may return here: RediSearch's
-- MAXSEARCHRESULTS, up to MAX_LIMIT. Asking an empty query for MAX_LIMIT
-- entries either works or fails naming the cap, so no right beyond
-- FT.SEARCH is needed. Any other failure is left to the real queries.
local function result_cap(ctx)
  local ok, err = pcall(rcall, 'FT.SEARCH', ctx.cp, '@thread_id:{lgprune} -@thread_id:{lgprune}',
    'NOCONTENT', 'LIMIT', '0', tostring(MAX_LIMIT), 'DIALECT', '2')
  local cap = not ok and tonumber(error_text(err):match('LIMIT exceeds maximum of (%d+)'))
  return cap and math.max(cap, 1) or MAX_LIMIT
end

-- The server checks every entry point makes before it plans: the JSON
-- module answers, and ctx.cap holds the search result cap.
local function check_server(ctx)
  require_json(ctx)
  ctx.cap = result_cap(ctx)
end

-- How many index entries carry the thread's tag (a superset of the thread:
-- the tag matches case-insensitively).
local function count_tagged(ctx, tag)
  local res = search({ ctx.cp, '@thread_id:{$t}', 'PARAMS', '2', 't', tag,
    'NOCONTENT', 'LIMIT', '0', '0', 'TIMEOUT', '0', 'DIALECT', '2' })
  return res[1]
end

-- A copy of search args with SORTBY (when sorted), LIMIT, TIMEOUT and DIALECT.
local function finish_query(args, limit, sorted)
  local out = { unpack(args) }
  if sorted then
    for _, a in ipairs({ 'SORTBY', 'checkpoint_id', 'DESC' }) do
      out[#out + 1] = a
    end
  end
  for _, a in ipairs({ 'LIMIT', '0', tostring(limit), 'TIMEOUT', '0', 'DIALECT', '2' }) do
    out[#out + 1] = a
  end
  return out
end

-- FT.SEARCH that must return every entry up to `limit`: a short answer (a
-- search timeout returns partial results) stops the call before any delete.
local function search_all(args, limit, per_entry)
  local res = search(args)
  local returned = (#res - 1) / per_entry
  local expected = math.min(res[1], limit)
  if returned < expected then
    fail('the index returned ' .. returned .. ' of ' .. expected
      .. ' entries (a search timeout?); nothing was deleted, try again')
  end
  return res
end

-- JSON.GET of one path, decoded; nil when the key or path is missing.
local function json_get(key, path)
  local raw = rcall('JSON.GET', key, path)
  if not raw then
    return nil
  end
  return cjson.decode(raw)[1]
end

-- The doc of a root checkpoint key: the key must be exactly <prefix><id>
-- (prefix = <cp>:<thread>:__empty__:) with a non-empty id free of colons, a
-- form no other thread's key can take (see list_checkpoints). Else nil.
local function root_doc(key, prefix)
  if key:find(prefix, 1, true) == 1 and #key > #prefix and not key:find(':', #prefix + 1, true) then
    return { key = key, ns = ROOT_NS, id = key:sub(#prefix + 1) }
  end
  return nil
end

local WINDOW_START_MS = 1000 -- first span of the root window, widened x4
local CLOCK_SLACK_MS = 1000 -- how far ids and checkpoint_ts may disagree

-- Root checkpoints of a thread too large to list whole, without sorting it:
-- a window of the newest by checkpoint_ts, anchored at the latest pointer and
-- sized to hold more than `keep` (at most `limit`), plus a page of older
-- ones. Any listed checkpoint with `keep` newer ones listed beside it is
-- provably not among the newest `keep`, whatever was left out (the plan keeps
-- the newest `keep` listed: they are the witnesses). Returns the docs and
-- whether the witnesses are surely the true newest `keep`: the window was
-- listed whole and began before the keep-th newest id was made (the saver
-- stamps checkpoint_ts after making the id, on the same clock). Returns nil
-- when no latest pointer anchors the window.
local function root_window(ctx, thread, tag, keep, limit)
  local prefix = ctx.cp .. ':' .. thread .. ':' .. ROOT_NS .. ':'
  local ok, newest = pcall(rcall, 'GET', ctx.cp .. '_latest:' .. thread .. ':' .. ROOT_NS)
  if not ok or type(newest) ~= 'string' or not root_doc(newest, prefix) then
    return nil
  end
  local read, ts = pcall(json_get, newest, '$.checkpoint_ts')
  if not read or type(ts) ~= 'number' then
    return nil
  end
  local args = { ctx.cp, '', 'PARAMS', '4', 't', tag, 'n', ROOT_NS, 'NOCONTENT' }
  local function query(range, n)
    args[2] = '@thread_id:{$t} @checkpoint_ns:{$n} @checkpoint_ts:' .. range
    return search(finish_query(args, n, false))
  end
  local function count_since(lo)
    return query(string.format('[%.3f +inf]', lo), 0)[1]
  end
  -- widen until the window holds more than `keep`, then narrow while it
  -- holds more than one call lists
  local short, span = 0, WINDOW_START_MS
  local count = count_since(ts - span)
  while count <= keep and span < ts do
    short, span = span, span * 4
    count = count_since(ts - span)
  end
  for _ = 1, 12 do
    if count <= limit or span - short < 1 then
      break
    end
    local middle = (short + span) / 2
    local inside = count_since(ts - middle)
    if inside > keep then
      span, count = middle, inside
    else
      short = middle
    end
  end
  local lo = ts - span
  local docs, listed = {}, {}
  local function add(keys, first)
    for i = first, #keys do
      local doc = not listed[keys[i]] and root_doc(keys[i], prefix)
      if doc then
        listed[doc.key] = true
        docs[#docs + 1] = doc
      end
    end
  end
  add({ newest }, 1)
  local window = query(string.format('[%.3f +inf]', lo), limit)
  add(window, 2)
  local ids = {}
  for _, d in ipairs(docs) do
    ids[#ids + 1] = d.id
  end
  table.sort(ids, function(a, b) return a > b end)
  local kth = ids[keep]
  local kth_ms = kth and uuid6_ms(kth)
  local exact = window[1] <= #window - 1 and kth_ms ~= nil and kth_ms >= lo + CLOCK_SLACK_MS
  add(query(string.format('[-inf (%.3f]', lo), limit), 2)
  return docs, exact
end

-- The thread's checkpoints, as {key, ns, id}: all of them, or when `sorted`
-- the newest `limit` of the namespaces other than the root and, for the
-- root, a root_window under `rule` when one can be anchored (else its newest
-- `limit`). Also returns whether the root's newest KEEP are surely listed
-- (false only for a root window that cannot prove it). `tagged` is the
-- number of entries tagged with the thread's id.
-- Root checkpoints are listed by key alone (NOCONTENT, the cheap path) and
-- kept only when the key is exactly <cp>:<thread>:__empty__:<id> with an id
-- free of colons: a key of any other thread id cannot have that form, since
-- its extra ':'-separated part would leave a colon in <id>. Checkpoints of
-- other namespaces are confirmed by their own thread_id and checkpoint_id
-- fields, and by the key the saver builds from them.
local function list_checkpoints(ctx, thread, tag, limit, sorted, tagged, rule)
  local docs, exact = nil, true
  local prefix = ctx.cp .. ':' .. thread .. ':'
  local root_prefix = prefix .. ROOT_NS .. ':'
  if sorted and rule then
    docs, exact = root_window(ctx, thread, tag, math.max(rule.keep, 1), limit)
  end
  local res = { tagged }
  if not docs then
    docs, exact = {}, true
    res = search_all(finish_query({ ctx.cp, '@thread_id:{$t} @checkpoint_ns:{$n}',
      'PARAMS', '4', 't', tag, 'n', ROOT_NS, 'NOCONTENT' }, limit, sorted), limit, 1)
  end
  for i = 2, #res do
    docs[#docs + 1] = root_doc(res[i], root_prefix)
  end
  if not sorted and res[1] >= tagged then
    return docs, exact -- every tagged entry is a root one
  end
  res = search_all(finish_query({ ctx.cp, '@thread_id:{$t} -@checkpoint_ns:{$n}',
    'PARAMS', '4', 't', tag, 'n', ROOT_NS, 'RETURN', '2', 'thread_id', 'checkpoint_id' },
    limit, sorted), limit, 2)
  for i = 2, #res, 2 do
    local key, fields = res[i], res[i + 1]
    local f = {}
    for j = 1, #fields, 2 do
      f[fields[j]] = fields[j + 1]
    end
    local id = f.checkpoint_id
    if f.thread_id == thread and id and id ~= '' and #key > #prefix + #id + 1
      and key:sub(1, #prefix) == prefix and key:sub(-#id - 1) == ':' .. id then
      local ns = key:sub(#prefix + 1, #key - #id - 1)
      if ns ~= ROOT_NS then
        docs[#docs + 1] = { key = key, ns = ns, id = id }
      end
    end
  end
  -- Sorted, each list is the newest `limit` of its part of the thread, so each
  -- namespace's docs here are its newest ones; the root's are always seen.
  return docs, exact
end

-- The keys of the object at `path` of a JSON document, as a set.
local function json_keyset(key, path)
  local set = {}
  local res = rcall('JSON.OBJKEYS', key, path)
  if type(res) == 'table' and type(res[1]) == 'table' then
    for _, k in ipairs(res[1]) do
      set[k] = true
    end
  end
  return set
end

-- DeltaChannel -----------------------------------------------------------------

-- Delta channels a checkpoint rebuilds from its ancestors: those with a
-- counters_since_delta_snapshot entry and a version, but no stored value.
-- `meta` is the checkpoint's metadata string.
local function delta_channels(key, meta)
  if type(meta) ~= 'string' or not meta:find('counters_since_delta_snapshot', 1, true) then
    return nil
  end
  local ok, decoded = pcall(cjson.decode, meta)
  if not ok or type(decoded) ~= 'table' then
    fail('checkpoint ' .. show(key) .. ' has unreadable metadata; nothing was deleted')
  end
  local counters = decoded.counters_since_delta_snapshot
  if type(counters) ~= 'table' then
    return nil
  end
  local versions = json_keyset(key, '$.checkpoint.channel_versions')
  local values = json_keyset(key, '$.checkpoint.channel_values')
  local needed, any = {}, false
  for ch in pairs(counters) do
    if versions[ch] and not values[ch] then
      needed[ch] = true
      any = true
    end
  end
  return any and needed or nil
end

-- True when every member of set a is in set b.
local function subset(a, b)
  for k in pairs(a) do
    if not b[k] then
      return false
    end
  end
  return true
end

-- Walk the parent chain of a kept checkpoint, marking in `protect` (by id)
-- every ancestor up to the nearest one storing all `needed` channels, as
-- get_delta_channel_history would read them. `seen` memoises walks per id.
-- Returns the ancestors read, or nil when more than `limit` were needed, and
-- true when the chain stops at a parent not stored yet: a saver writing now
-- may store it later, after its own ancestors, so nothing older can be judged.
local function walk_delta(ctx, thread, ns, key, needed, protect, seen, limit)
  local steps = 0
  while true do
    local parent = json_get(key, '$.parent_checkpoint_id')
    if type(parent) ~= 'string' or parent == '' then
      return steps
    end
    local pkey = ctx.cp .. ':' .. thread .. ':' .. ns .. ':' .. parent
    if rcall('EXISTS', pkey) == 0 then
      local ms = uuid6_ms(parent)
      return steps, ms == nil or ms >= now_ms() - DEFAULT_GRACE_MS
    end
    local before = seen[parent]
    if before and subset(needed, before) then
      return steps
    end
    steps = steps + 1
    if steps > limit then
      return nil
    end
    seen[parent] = before or {}
    for ch in pairs(needed) do
      seen[parent][ch] = true
    end
    protect[parent] = true
    local values = json_keyset(pkey, '$.checkpoint.channel_values')
    for ch in pairs(values) do
      needed[ch] = nil
    end
    if next(needed) == nil then
      return steps
    end
    key = pkey
  end
end

-- Planning -----------------------------------------------------------------------

-- The metadata strings of doc[ids[first..last]], read with one JSON.MGET
-- (in batches), indexed like ids.
local function kept_metadata(doc, ids, first, last)
  local metas = {}
  for from = first, last, UNLINK_BATCH do
    local keys = {}
    for i = from, math.min(from + UNLINK_BATCH - 1, last) do
      keys[#keys + 1] = doc[ids[i]].key
    end
    keys[#keys + 1] = '$.metadata'
    local res = rcall('JSON.MGET', unpack(keys))
    for j = 1, #keys - 1 do
      local raw = res[j]
      metas[from + j - 1] = type(raw) == 'string' and cjson.decode(raw)[1] or nil
    end
  end
  return metas
end

-- How many of a namespace's ids (sorted ascending) go: all but the newest
-- `keep`, and with `old_before` only those whose uuid6 time is older.
local function cut(ids, keep, old_before)
  local last = #ids - keep
  if old_before then
    local m = 0
    while m < last do
      local ms = uuid6_ms(ids[m + 1])
      if not ms or ms >= old_before then
        break
      end
      m = m + 1
    end
    last = m
  end
  return last
end

-- Decide, from the thread's listed checkpoints, which ones go under `rule`
-- (see policy). Returns the doomed docs, oldest first within each namespace,
-- the number of delta ancestors spared, whether the thread was idle, and
-- whether a kept checkpoint rebuilds delta channels from its ancestors.
-- `walk_limit` bounds each delta walk.
local function plan(ctx, thread, docs, rule, walk_limit)
  -- per namespace: ids sorted ascending (plain string order, as uuid6 sorts)
  local by_ns, names, newest = {}, {}, nil
  for _, d in ipairs(docs) do
    local group = by_ns[d.ns]
    if not group then
      group = { ids = {}, doc = {} }
      by_ns[d.ns] = group
      names[#names + 1] = d.ns
    end
    group.ids[#group.ids + 1] = d.id
    group.doc[d.id] = d
    if not newest or d.id > newest then
      newest = d.id
    end
  end
  for _, ns in ipairs(names) do
    table.sort(by_ns[ns].ids)
  end
  local keep, old_before, idle = rule.keep, rule.old_before, false
  if rule.idle_before and newest then
    local ms = uuid6_ms(newest)
    if ms and ms < rule.idle_before then
      keep, old_before, idle = 0, nil, true
    end
  end
  -- the oldest kept root checkpoint, when the root keeps any
  local oldest_root
  local root = by_ns[ROOT_NS]
  if root then
    oldest_root = root.ids[cut(root.ids, keep, old_before) + 1]
  end
  local doomed, spared, delta = {}, 0, false
  for _, ns in ipairs(names) do
    local ids, doc = by_ns[ns].ids, by_ns[ns].doc
    local n = #ids
    local last = cut(ids, keep, old_before) -- ids[1..last] go
    if ns ~= ROOT_NS and oldest_root and ids[n] < oldest_root then
      last = n -- a subgraph run older than every kept root checkpoint
    end
    if last >= 1 then
      local protect, seen = {}, {}
      -- the checkpoint the saver reads as latest (its pointer names it) stays
      -- while the namespace keeps any, whatever its id says
      local ns_prefix = ctx.cp .. ':' .. thread .. ':' .. ns .. ':'
      local ok, latest = pcall(rcall, 'GET', ctx.cp .. '_latest:' .. thread .. ':' .. ns)
      local latest_id = nil
      if ok and type(latest) == 'string' and latest:find(ns_prefix, 1, true) == 1 then
        latest_id = latest:sub(#ns_prefix + 1)
      end
      local metas = kept_metadata(doc, ids, last + 1, n)
      local hold = false -- a kept checkpoint's delta chain runs through a parent not stored yet
      for i = n, last + 1, -1 do
        local key = doc[ids[i]].key
        local needed = delta_channels(key, metas[i])
        delta = delta or needed ~= nil
        if needed then
          local steps, unsure = walk_delta(ctx, thread, ns, key, needed, protect, seen, walk_limit)
          if not steps then
            fail('the DeltaChannel history of ' .. show(key) .. ' is longer than '
              .. walk_limit .. ' checkpoints; raise BUDGET to prune this thread')
          end
          hold = hold or unsure
        end
      end
      for i = 1, hold and 0 or last do
        if protect[ids[i]] then
          spared = spared + 1
        elseif not (ids[i] == latest_id and last < n) then
          local d = doc[ids[i]]
          d.newest = (i == n) or ids[i] == latest_id
          doomed[#doomed + 1] = d
        end
      end
    end
  end
  return doomed, spared, idle, delta
end

-- Deleting -------------------------------------------------------------------------

-- The registry zset in which the saver lists the write keys of checkpoint `d`.
local function registry_key(thread, d)
  return ZSET_PREFIX .. ':' .. thread .. ':' .. d.ns .. ':' .. d.id
end

-- Whether write key `key`, found by a writes query on the thread's tag and
-- starting with d's write prefix `<wp>:<thread>:<ns>:<id>:` (`prefix_len`
-- bytes), belongs to doomed checkpoint `d` of `thread`.
--
-- The saver makes every write key `<wp>:<thread>:<ns>:<id>:<task>:<idx>` with
-- an integer idx, but any part may hold colons, so the key is proof only when
-- d is `plain` (see delete_doomed) and the rest is `<task>:<idx>` with a
-- colon-free task. Then the true owner's prefix cannot be longer (it would
-- take the one colon its own task and idx need), nor shorter: ending at a
-- colon inside d's prefix, it would leave our thread's ns and id, which have
-- none, too few colons, or belong to a thread cut short at one of our
-- thread's colons, whose tag cannot match ours (no commas or NUL in ours, and
-- a case-folded prefix is shorter). Otherwise the key counts when the saver
-- listed it in d's registry zset, or the write's own fields name d exactly.
local function owns(thread, d, key, prefix_len)
  if d.plain and key:find('^[^:]*:%-?%d+$', prefix_len + 1) then
    return true
  end
  if rcall('ZSCORE', registry_key(thread, d), key) then
    return true
  end
  local raw = rcall('JSON.GET', key, '$.thread_id', '$.checkpoint_ns', '$.checkpoint_id')
  local ok, f = pcall(cjson.decode, raw or 'null')
  return ok and type(f) == 'table'
    and (f['$.thread_id'] or {})[1] == thread
    and (f['$.checkpoint_ns'] or {})[1] == d.ns
    and (f['$.checkpoint_id'] or {})[1] == d.id
end

-- Sort write keys from a writes-index answer to the doomed checkpoint each
-- belongs to: `owner` maps '<wp>:<thread>:<ns>:<id>:' to a doomed checkpoint;
-- a key counts when it starts with such a prefix and `owns` confirms it.
-- `guess` is the length of the most common prefix, tried first.
local function match_writes(res, base, thread, owner, found, guess)
  for i = 2, #res do
    local key = res[i]
    -- fast path: the usual prefix length (root namespace, uuid ids)
    local d = owner[key:sub(1, guess)]
    if d and not owns(thread, d, key, guess) then
      d = nil
    end
    local pos = base
    while not d do
      pos = key:find(':', pos + 1, true)
      if not pos then
        break
      end
      d = owner[key:sub(1, pos)]
      if d and (pos == guess or not owns(thread, d, key, pos)) then
        d = nil
      end
    end
    if d then
      local list = found[d.id]
      if not list then
        list = {}
        found[d.id] = list
      end
      list[#list + 1] = key
    end
  end
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

-- Writes-index query args for the writes of the given checkpoints of the
-- thread tagged `tag`, by id.
local function writes_query(ctx, tag, chunk)
  local query, args = {}, { ctx.wp, '', 'PARAMS', tostring(2 * #chunk + 2), 't', tag }
  for i, d in ipairs(chunk) do
    query[#query + 1] = '$c' .. i
    args[#args + 1] = 'c' .. i
    args[#args + 1] = d.param
  end
  args[2] = '@thread_id:{$t} @checkpoint_id:{' .. table.concat(query, ' | ') .. '}'
  args[#args + 1] = 'NOCONTENT'
  return args
end

-- The doomed checkpoints from position `first` on whose writes, looked up
-- together, fit in `limit` index entries: up to WRITES_CHUNK of them, halved
-- until they fit, down to one (whose writes may then take several calls).
local function next_chunk(ctx, tag, doomed, first, limit)
  local size = WRITES_CHUNK
  while true do
    local chunk = {}
    for j = first, math.min(first + size - 1, #doomed) do
      chunk[#chunk + 1] = doomed[j]
    end
    if #chunk == 1 or search(finish_query(writes_query(ctx, tag, chunk), 0, false))[1] <= limit then
      return chunk
    end
    size = math.floor(#chunk / 2)
  end
end

-- Collects keys to delete and deletes them in fixed-size batches (or, in a
-- dry run, counts those that exist).
local function sink(dry)
  local self = { pending = {}, deleted = 0 }
  function self.flush()
    local p = self.pending
    for i = 1, #p, UNLINK_BATCH do
      local last = math.min(i + UNLINK_BATCH - 1, #p)
      if dry then
        self.deleted = self.deleted + rcall('EXISTS', unpack(p, i, last))
      else
        self.deleted = self.deleted + rcall('UNLINK', unpack(p, i, last))
      end
    end
    self.pending = {}
  end
  function self.add(key)
    local p = self.pending
    p[#p + 1] = key
    if #p >= UNLINK_BATCH then
      self.flush()
    end
  end
  return self
end

-- Delete doomed checkpoints oldest first, each with all its writes, its
-- registry zset and, when it was its namespace's newest, the latest pointer,
-- within ctx.budget keys (not in a dry run). Writes are found with one query
-- over the thread's writes when the thread was listed `whole` and that fits
-- 2 * budget entries, else chunk by chunk of checkpoint ids (then a checkpoint
-- whose id RediSearch cannot match is kept). Each key found is confirmed by
-- `owns`. A checkpoint whose writes do not all fit loses only writes this
-- call. Returns counts and whether doomed checkpoints remain.
local function delete_doomed(ctx, thread, tag, doomed, whole)
  local ckpts, writes, others = sink(ctx.dry), sink(ctx.dry), sink(ctx.dry)
  local left = ctx.dry and math.huge or ctx.budget
  local read_left = math.min(2 * ctx.budget, ctx.cap)
  local base = #ctx.wp + #thread + 2
  local owner, guess = {}, 0
  local plain_thread = not thread:find('[,%z]')
  for _, d in ipairs(doomed) do
    local prefix = ctx.wp .. ':' .. thread .. ':' .. d.ns .. ':' .. d.id .. ':'
    owner[prefix] = d
    d.plain = plain_thread and not (d.ns .. d.id):find(':', 1, true)
    guess = #prefix
  end
  local found -- the writes of every doomed checkpoint, when one query holds them
  local thread_writes = { ctx.wp, '@thread_id:{$t}', 'PARAMS', '2', 't', tag, 'NOCONTENT' }
  -- too many writes for one answer, by the first checkpoint's registry? then per chunk
  if #doomed > 0 and whole then
    local first = doomed[1]
    local per = rcall('ZCARD', registry_key(thread, first))
    whole = per * #doomed <= read_left
  end
  if #doomed > 0 and whole then
    local res = search(finish_query(thread_writes, read_left, false))
    if res[1] <= #res - 1 then
      read_left = read_left - (#res - 1)
      found = {}
      match_writes(res, base, thread, owner, found, guess)
    end -- else the thread has too many writes: look them up per chunk below
  end
  if not found then -- by id: one whose id RediSearch cannot match stays, its writes unseen
    local findable = {}
    for _, d in ipairs(doomed) do
      d.param = id_param(d.id)
      if d.param then
        findable[#findable + 1] = d
      end
    end
    doomed = findable
  end
  local more = false
  local i = 1
  while i <= #doomed and not more do
    local chunk, chunk_found, truncated
    if found then
      chunk, chunk_found, truncated = { doomed[i] }, found, false
    elseif read_left < 1 then
      more = true
      break
    else
      chunk = next_chunk(ctx, tag, doomed, i, read_left)
      local res = search(finish_query(writes_query(ctx, tag, chunk), read_left, false))
      read_left = read_left - (#res - 1)
      truncated = res[1] > #res - 1
      chunk_found = {}
      match_writes(res, base, thread, owner, chunk_found, guess)
    end
    for _, d in ipairs(chunk) do
      local ws = chunk_found[d.id] or {}
      local fits = not truncated and #ws + 2 <= left
      for k = 1, #ws do
        if left < 1 then
          break
        end
        writes.add(ws[k])
        left = left - 1
      end
      if not fits then
        more = true
        break
      end
      ckpts.add(d.key)
      others.add(registry_key(thread, d))
      if d.newest then
        others.add(ctx.cp .. '_latest:' .. thread .. ':' .. d.ns)
      end
      left = left - 2
    end
    i = i + #chunk
  end
  writes.flush()
  others.flush()
  ckpts.flush()
  return {
    checkpoints = ckpts.deleted,
    writes = writes.deleted,
    keys = ckpts.deleted + writes.deleted + others.deleted,
    more = more,
  }
end

-- A write prefix that is not the saver's would orphan every write of the
-- checkpoints deleted. The registry zsets record the real write keys: check
-- those of the first doomed checkpoints that have any, before any delete.
local function check_write_prefix(ctx, thread, doomed)
  for i = 1, math.min(#doomed, 8) do
    local d = doomed[i]
    local member = rcall('ZRANGE', registry_key(thread, d), 0, 0)[1]
    if member then
      local want = ctx.wp .. ':' .. thread .. ':' .. d.ns .. ':' .. d.id .. ':'
      if member:sub(1, #want) ~= want then
        fail('the writes of ' .. show(d.key) .. ' are stored as ' .. show(member)
          .. ', not under WRITE_PREFIX ' .. show(ctx.wp) .. ': pass the saver\'s '
          .. 'checkpoint_write_prefix; nothing was deleted')
      end
      return
    end
  end
end

-- One thread ------------------------------------------------------------------------

-- Prune one thread (stored id `thread`, indexed as `tag`) under `rule`
-- within ctx.budget. Returns a table of counts; see lgprune_thread.
local function prune_thread(ctx, thread, tag, rule)
  local out = { checkpoints_deleted = 0, writes_deleted = 0, keys_deleted = 0,
    checkpoints_kept = 0, delta_ancestors_kept = 0, more = 0, idle = false, listed = false, count_exact = true }
  local tagged = count_tagged(ctx, tag)
  out.checkpoints_kept = tagged
  if tagged == 0 then
    return out
  end
  if ctx.sweep and not ctx.details and not rule.idle_before and tagged <= rule.keep then
    out.count_exact = false
    return out -- nothing over keep (the tag count is an upper bound)
  end
  -- the whole thread when it fits the budget, else its newest entries
  local view = math.min(tagged, ctx.budget + math.min(rule.keep, tagged), ctx.cap)
  local complete = view >= tagged
  local docs, exact = list_checkpoints(ctx, thread, tag, view, not complete, tagged, rule)
  out.listed = true
  local doomed, spared, idle, delta = plan(ctx, thread, docs, rule, ctx.budget)
  if delta and not exact then
    -- delta history must be walked from the true newest: list them exactly
    docs = list_checkpoints(ctx, thread, tag, view, true, tagged, nil)
    doomed, spared, idle = plan(ctx, thread, docs, rule, ctx.budget)
  end
  check_write_prefix(ctx, thread, doomed)
  local done = delete_doomed(ctx, thread, tag, doomed, complete)
  out.checkpoints_deleted = done.checkpoints
  out.writes_deleted = done.writes
  out.keys_deleted = done.keys
  out.delta_ancestors_kept = spared
  out.idle = idle
  if complete then
    out.checkpoints_kept = #docs - done.checkpoints
  else
    out.checkpoints_kept = tagged - done.checkpoints -- an upper bound
    out.count_exact = false
  end
  -- a partial view has more to look at whenever this call got somewhere
  if done.more or (not complete and not ctx.dry and done.checkpoints > 0) then
    out.more = 1
  end
  return out
end

-- Flatten counts into a name/value reply, in the order of `fields`.
local THREAD_FIELDS = { 'checkpoints_deleted', 'writes_deleted', 'keys_deleted',
  'checkpoints_kept', 'delta_ancestors_kept', 'more' }
local function reply(out, fields)
  local r = {}
  for _, name in ipairs(fields) do
    r[#r + 1] = name
    r[#r + 1] = out[name]
  end
  return r
end

-- Add the counts of `part` into `total`.
local function add_counts(total, part)
  for _, name in ipairs({ 'checkpoints_deleted', 'writes_deleted', 'keys_deleted',
    'checkpoints_kept', 'delta_ancestors_kept' }) do
    total[name] = (total[name] or 0) + part[name]
  end
end

-- Escape glob characters for SCAN MATCH.
local function glob_escape(s)
  return (s:gsub('([%*%?%[%]\\])', '\\%1'))
end

local THREAD_OPTIONS = { DRY_RUN = 'flag', BUDGET = 'count', MAX_AGE = 'ms', IDLE_TTL = 'ms',
  CHECKPOINT_PREFIX = 'string', WRITE_PREFIX = 'string' }

-- Orphans ----------------------------------------------------------------------------

-- True when `id` is a uuid6 older than `before` (ms): younger or undated
-- keys may belong to a checkpoint that is still being written.
local function older(id, before)
  local ms = id and uuid6_ms(id)
  return ms ~= nil and ms < before
end

-- Orphan checks, each true for a key of this saver whose checkpoint is gone
-- and whose checkpoint id dates from before `before`.
-- A latest pointer: its target checkpoint is gone.
local function orphan_pointer(ctx, key, before)
  local ok, target = pcall(rcall, 'GET', key)
  if not ok or type(target) ~= 'string' or target:sub(1, #ctx.cp + 1) ~= ctx.cp .. ':' then
    return false
  end
  return rcall('EXISTS', target) == 0 and older(target:match(':([^:]*)$'), before)
end

-- A write: the checkpoint named by its own fields is gone.
local function orphan_write(ctx, key, before)
  local ok, raw = pcall(rcall, 'JSON.GET', key, '$.thread_id', '$.checkpoint_ns', '$.checkpoint_id')
  if not ok or type(raw) ~= 'string' then
    return false
  end
  local f = cjson.decode(raw)
  local t, ns, id = f['$.thread_id'][1], f['$.checkpoint_ns'][1], f['$.checkpoint_id'][1]
  if type(t) ~= 'string' or type(ns) ~= 'string' or type(id) ~= 'string' then
    return false
  end
  local stem = t .. ':' .. ns .. ':' .. id
  if key:sub(1, #ctx.wp + #stem + 2) ~= ctx.wp .. ':' .. stem .. ':' then
    return false -- not stored where the saver would store it: not ours to judge
  end
  return rcall('EXISTS', ctx.cp .. ':' .. stem) == 0 and older(id, before)
end

-- A write registry: write_keys_zset:<stem> lists writes <wp>:<stem>:..., and
-- the checkpoint <cp>:<stem> is gone. (Registries of other prefixes list
-- other write keys and are left alone.)
local function orphan_registry(ctx, key, before)
  local stem = key:sub(#ZSET_PREFIX + 2)
  local ok, first = pcall(rcall, 'ZRANGE', key, 0, 0)
  if not ok or type(first[1]) ~= 'string'
    or first[1]:sub(1, #ctx.wp + #stem + 2) ~= ctx.wp .. ':' .. stem .. ':' then
    return false
  end
  return rcall('EXISTS', ctx.cp .. ':' .. stem) == 0 and older(stem:match(':([^:]*)$'), before)
end

-- Registered functions ---------------------------------------------------------------

--[[
lgprune_version: the library version, and with BUILD which code this is.
  FCALL lgprune_version 0 [BUILD]
  Reply: bulk string, e.g. "0.1.0"; with BUILD, [version, build]: build is
  "dev" for the file loaded as it is, else the hash the Python package set.
]]
local function lgprune_version(_, args)
  if args[1] ~= nil and string.upper(args[1]) == 'BUILD' then
    return { VERSION, BUILD }
  end
  return VERSION
end

--[[
lgprune_thread: keep the newest KEEP checkpoints per namespace of one thread.
  FCALL lgprune_thread 0 THREAD_ID KEEP [DRY_RUN] [BUDGET n] [MAX_AGE ms]
        [IDLE_TTL ms] [CHECKPOINT_PREFIX p] [WRITE_PREFIX p]
  THREAD_ID  the thread id exactly as the application passes it ("" is the
             saver's empty thread); matched case-sensitively.
  KEEP       checkpoints to keep per namespace, a non-negative integer
             (0 deletes the thread).
  DRY_RUN    plan and count, delete nothing (BUDGET does not cap the count).
  BUDGET     keys deleted per call, default 2000 (10 to 100000). A call also
             lists at most BUDGET + KEEP checkpoints of the root namespace and
             as many of the others, reads at most 2 * BUDGET write entries and
             walks at most BUDGET delta ancestors.
  MAX_AGE    also keep every checkpoint younger than this many milliseconds
             (by its uuid6 id): only older ones beyond KEEP go.
  IDLE_TTL   delete the whole thread when its newest checkpoint is older than
             this many milliseconds.
  CHECKPOINT_PREFIX / WRITE_PREFIX
             the saver's checkpoint_prefix / checkpoint_write_prefix
             (defaults "checkpoint" / "checkpoint_write"); the index names.
  Reply: flat list of name/value pairs:
    checkpoints_deleted   checkpoint documents deleted by this call
    writes_deleted        write documents deleted
    keys_deleted          all keys deleted (with registry zsets, latest pointers)
    checkpoints_kept      the thread's checkpoints left (an upper bound while more is 1)
    delta_ancestors_kept  checkpoints beyond KEEP kept for DeltaChannel history
    more                  1 when the budget ran out: call again
  Errors (nothing deleted): "LGPRUNE ..." for a bad KEEP or option, a thread id
  the index cannot match, a missing index, a server without the modules.
]]
local function lgprune_thread(_, args)
  local opts = parse_options(args, 3, THREAD_OPTIONS)
  local rule = policy(args[2], opts)
  local ctx = context(opts)
  local thread, tag = check_thread(args[1])
  check_server(ctx)
  return reply(prune_thread(ctx, thread, tag, rule), THREAD_FIELDS)
end

--[[
lgprune_many: lgprune_thread for several threads in one call, sharing one budget.
  FCALL lgprune_many 0 KEEP COUNT THREAD_ID... [options of lgprune_thread]
  COUNT      how many thread ids follow (at most 1000).
  Reply: the counts of lgprune_thread summed over the threads, with
    next    0 when every thread is done, else the 1-based position of the
            first thread still to prune: call again with the ids from there.
  Every id is checked before anything is deleted.
]]
local function lgprune_many(_, args)
  local count = parse_count('COUNT', args[2], 2 ^ 53)
  if count < 1 or count > 1000 then
    fail('COUNT must be 1 to 1000 thread ids, got ' .. count)
  end
  local opts = parse_options(args, count + 3, THREAD_OPTIONS)
  local rule = policy(args[1], opts)
  local ctx = context(opts)
  local threads = {}
  for i = 1, count do
    local thread, tag = check_thread(args[i + 2])
    threads[i] = { thread, tag }
  end
  check_server(ctx)
  local total = { checkpoints_deleted = 0, writes_deleted = 0, keys_deleted = 0,
    checkpoints_kept = 0, delta_ancestors_kept = 0, next = 0 }
  local left = ctx.budget
  for i, t in ipairs(threads) do
    if left < MIN_BUDGET then
      total.next = i
      break
    end
    local out = prune_thread(with_budget(ctx, left), t[1], t[2], rule)
    add_counts(total, out)
    left = left - out.keys_deleted
    if out.more == 1 then
      total.next = i
      break
    end
  end
  return reply(total, { 'checkpoints_deleted', 'writes_deleted', 'keys_deleted',
    'checkpoints_kept', 'delta_ancestors_kept', 'next' })
end

local SWEEP_OPTIONS = { DRY_RUN = 'flag', BUDGET = 'count', MAX_AGE = 'ms', IDLE_TTL = 'ms',
  ORPHANS = 'flag', GRACE = 'ms', DETAILS = 'flag', CHECKPOINT_PREFIX = 'string', WRITE_PREFIX = 'string' }
local SWEEP_FIELDS = { 'cursor', 'threads_visited', 'threads_pruned', 'threads_deleted',
  'threads_skipped', 'checkpoints_deleted', 'writes_deleted', 'keys_deleted', 'orphans_deleted' }

--[[
lgprune_sweep: prune every thread, a slice of the keyspace per call.
  FCALL lgprune_sweep 0 CURSOR KEEP [DRY_RUN] [BUDGET n] [MAX_AGE ms] [IDLE_TTL ms]
        [ORPHANS] [GRACE ms] [CHECKPOINT_PREFIX p] [WRITE_PREFIX p]
  CURSOR     "0" to start, then the cursor the previous call returned.
  KEEP, MAX_AGE, IDLE_TTL, prefixes, DRY_RUN: as for lgprune_thread, per thread.
  BUDGET     work per call, default 2000: a deleted key counts 1, a thread
             visit 10 (50 when it lists the thread), an orphan check 3. A call stops at the end of a SCAN
             step once it is spent, or in the middle of one after deleting.
  ORPHANS    also delete writes, write registries and latest pointers whose
             checkpoint is gone, when that checkpoint's id is older than GRACE
             (ms, default 600000: writes can be stored before their checkpoint).
  DETAILS    add `threads`: per visited thread, [thread_id, checkpoints,
             checkpoints_deleted, keys_deleted, exact]: every thread is listed
             and its own checkpoints counted (exact 1), except one too large
             for a call's listing (BUDGET + KEEP checkpoints), whose count is
             an upper bound (exact 0). For `lgprune stats`.
  Threads are found by SCAN over the latest pointers (<cp>_latest:*); each
  pointer's checkpoint names its thread exactly. Threads already within KEEP
  cost one index count. Thread ids the index cannot match are skipped.
  Reply: name/value pairs:
    cursor               "0" when the sweep is complete, else pass it back ("00" when
                         the call stopped inside the first SCAN step: not complete)
    threads_visited      thread visits made by this call
    threads_pruned       visits that deleted something
    threads_deleted      threads deleted whole as idle (IDLE_TTL)
    threads_skipped      threads whose id the index cannot match
    checkpoints_deleted, writes_deleted, keys_deleted   as for lgprune_thread
    orphans_deleted      orphan keys deleted (also in keys_deleted)
    threads              with DETAILS only, last: the list described above
]]
local function lgprune_sweep(_, args)
  local cursor = args[1]
  if type(cursor) ~= 'string' or not cursor:match('^%d+$') then
    fail('CURSOR must be "0" or a cursor returned by lgprune_sweep, got ' .. show(cursor))
  end
  local opts = parse_options(args, 3, SWEEP_OPTIONS)
  local rule = policy(args[2], opts)
  local ctx = context(opts)
  ctx.sweep = true
  ctx.details = opts.DETAILS == true
  check_server(ctx)
  local before = now_ms() - (opts.GRACE or DEFAULT_GRACE_MS)
  local latest = ctx.cp .. '_latest:'
  local scan = { 'SCAN', cursor, 'COUNT', SCAN_COUNT }
  if not opts.ORPHANS then
    scan = { 'SCAN', cursor, 'MATCH', glob_escape(latest) .. '*', 'COUNT', SCAN_COUNT }
  end
  local out = { threads_visited = 0, threads_pruned = 0, threads_deleted = 0, threads_skipped = 0,
    checkpoints_deleted = 0, writes_deleted = 0, keys_deleted = 0, orphans_deleted = 0 }
  local seen, details = {}, {}
  local left, work = ctx.budget, 0 -- keys left to delete; visits and checks so far
  local orphans = sink(ctx.dry)

  -- Visit the thread of a latest pointer; false when the call must stop here.
  local function visit(key)
    local ok, target = pcall(rcall, 'GET', key)
    local thread
    if ok and type(target) == 'string' then
      local read, value = pcall(json_get, target, '$.thread_id')
      if read then
        thread = value
      end
    end
    if type(thread) ~= 'string' then
      work = work + CHECK_COST
      if opts.ORPHANS and orphan_pointer(ctx, key, before) then
        orphans.add(key)
      end
      return true
    end
    if seen[thread] then
      return true
    end
    if left < MIN_BUDGET then
      return false -- this call has deleted nearly its budget: resume here
    end
    seen[thread] = true
    work = work + VISIT_COST
    out.threads_visited = out.threads_visited + 1
    local stored, tag = thread_key(thread == EMPTY_ID and '' or thread)
    if not stored then
      out.threads_skipped = out.threads_skipped + 1
      return true
    end
    local done = prune_thread(with_budget(ctx, left), stored, tag, rule)
    if opts.DETAILS then
      details[#details + 1] = { thread, done.checkpoints_kept + done.checkpoints_deleted,
        done.checkpoints_deleted, done.keys_deleted, done.count_exact and 1 or 0 }
    end
    add_counts(out, done)
    left = left - done.keys_deleted
    if done.listed then
      work = work + LIST_COST
    end
    if done.keys_deleted > 0 then
      out.threads_pruned = out.threads_pruned + 1
    end
    if done.idle and done.more == 0 then
      out.threads_deleted = out.threads_deleted + 1
    end
    -- come back to this thread only when this call got somewhere with it
    return done.more == 0 or ctx.dry or done.keys_deleted == 0
  end

  local finished -- whether the last SCAN step was visited whole
  while true do
    scan[2] = cursor
    local res = rcall(unpack(scan))
    finished = true
    for _, key in ipairs(res[2]) do
      if key:sub(1, #latest) == latest then
        finished = visit(key)
      elseif opts.ORPHANS then
        local is_write = key:sub(1, #ctx.wp + 1) == ctx.wp .. ':'
        local is_registry = key:sub(1, #ZSET_PREFIX + 1) == ZSET_PREFIX .. ':'
        if is_write or is_registry then
          work = work + CHECK_COST
          if (is_write and orphan_write(ctx, key, before))
            or (is_registry and orphan_registry(ctx, key, before)) then
            orphans.add(key)
          end
        end
      end
      if not finished then
        break -- this call deleted what its budget allowed: resume this step
      end
    end
    work = work + math.floor(#res[2] / 25) + 1
    if finished then
      cursor = res[1]
    end
    if not finished or cursor == '0' or work + (ctx.budget - left) >= ctx.budget then
      break
    end
  end
  orphans.flush()
  out.orphans_deleted = orphans.deleted
  out.keys_deleted = out.keys_deleted + orphans.deleted
  if not finished and cursor == '0' then
    cursor = '00' -- stopped inside the first step: SCAN reads '00' as 0, the caller as not done
  end
  out.cursor = cursor
  local r = reply(out, SWEEP_FIELDS)
  if opts.DETAILS then
    r[#r + 1] = 'threads'
    r[#r + 1] = details
  end
  return r
end

redis.register_function { function_name = 'lgprune_version', callback = lgprune_version,
  flags = { 'no-writes' } }
redis.register_function { function_name = 'lgprune_thread', callback = entry(lgprune_thread) }
redis.register_function { function_name = 'lgprune_many', callback = entry(lgprune_many) }
redis.register_function { function_name = 'lgprune_sweep', callback = entry(lgprune_sweep) }
