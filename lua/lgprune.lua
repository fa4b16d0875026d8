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
local SCAN_COUNT = 50 -- keys per SCAN step of a sweep that checks every key (ORPHANS)
local POINTER_SCAN_COUNT = 200 -- ... and of one that MATCHes latest pointers only
local SCAN_KEYS_PER_UNIT = 8 -- a SCAN step costs 1 budget unit per this many keys it examines
local VISIT_COST = 10 -- budget units a sweep charges per thread visit
local LIST_COST = 40 -- ... and more when the visit lists and plans the thread
local CHECK_COST = 3 -- ... per orphan check
local DEFAULT_GRACE_MS = 600000 -- orphans younger than this may still be in flight
local UUID_EPOCH = 122192928000000000 -- 1582-10-15 to 1970-01-01 in 100 ns

-- Errors -------------------------------------------------------------------
-- Every error reply is "LGPRUNE <CODE> <message>"; the Python package maps
-- the code (never the wording) to an exception class:
--   BADARG    an argument, option or thread id lgprune refuses
--   NOINDEX   the saver's index does not exist (or the prefixes are not the saver's)
--   NOMODULE  the server lacks the search or JSON module
--   BADDATA   a stored document lgprune cannot read
--   PARTIAL   a search answered partially (a timeout?): try again

local Failure = {}

-- Abort the call with "LGPRUNE <code> <msg>". Only ever raised before the first write.
local function fail(code, msg)
  error(setmetatable({ code = code, msg = msg }, Failure), 0)
end

-- Raised when a fact cached from an earlier call, the search result cap, no
-- longer holds. Before the call's first write it is run again from scratch;
-- after one (a sweep or lgprune_many that finished some threads, each whole)
-- the call ends with a PARTIAL error and the caller repeats it.
local Stale = {}
local deleted_this_call = { keys = 0 } -- keys UNLINKed by the current call

-- Wrap a registered function so that fail() becomes a clean error reply.
local function entry(body)
  return function(keys, args)
    deleted_this_call.keys = 0
    local ok, res = pcall(body, keys, args)
    if not ok and res == Stale and deleted_this_call.keys == 0 then
      ok, res = pcall(body, keys, args)
    elseif not ok and res == Stale then
      res = setmetatable({ code = 'PARTIAL', msg = 'the search result cap (MAXSEARCHRESULTS) was lowered '
        .. 'while this call ran; the threads it finished were pruned whole: call again' }, Failure)
    end
    if ok then
      return res
    end
    if getmetatable(res) == Failure then
      return redis.error_reply('LGPRUNE ' .. res.code .. ' ' .. res.msg)
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
    fail('BADARG', name .. ' must be a non-negative integer, got ' .. show(s))
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
  return (tag:gsub('\\', '\\\\'))
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
      fail('BADARG', 'unknown option ' .. show(args[i]))
    elseif kind == 'flag' then
      opts[name] = true
      i = i + 1
    else
      local value = args[i + 1]
      if value == nil then
        fail('BADARG', name .. ' needs a value')
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
    fail('BADARG', 'prefixes must not be empty')
  end
  local budget = opts.BUDGET or DEFAULT_BUDGET
  if budget < MIN_BUDGET then
    fail('BADARG', 'BUDGET must be at least ' .. MIN_BUDGET)
  end
  -- `checked` is shared by the copies with_budget makes: what one thread proved holds for the call
  return { cp = cp, wp = wp, budget = budget, dry = opts.DRY_RUN == true, checked = {} }
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

-- The same context with a smaller delete budget (the rest read through).
local function with_budget(ctx, budget)
  return setmetatable({ budget = budget }, { __index = ctx })
end

-- Keys -----------------------------------------------------------------------
-- Every key name lgprune reads or deletes is built here (nothing else joins
-- key parts): `thread` is a thread record, ns and id as stored.

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

-- <cp>_latest:<thread>:<ns>, the key of a namespace's newest checkpoint.
local function latest_key(ctx, thread, ns)
  return ctx.cp .. '_latest:' .. thread.id .. ':' .. ns
end

-- <cp>_latest:, the start of every latest pointer (a sweep's SCAN looks for them).
local function latest_start(ctx)
  return ctx.cp .. '_latest:'
end

-- The checkpoint whose writes registry `key` (write_keys_zset:<stem>) lists,
-- and the start of those writes' keys: <cp>:<stem>, <wp>:<stem>: (the stem
-- <thread>:<ns>:<id> is not split: its parts hold colons).
local function registry_owner(ctx, key)
  local stem = key:sub(#ZSET_PREFIX + 2)
  return ctx.cp .. ':' .. stem, ctx.wp .. ':' .. stem .. ':'
end

-- Whether s begins with prefix.
local function starts_with(s, prefix)
  return s:sub(1, #prefix) == prefix
end

-- The doc of a root checkpoint key: the key must be exactly <prefix><id>
-- (prefix = checkpoint_prefix(thread, ROOT_NS)) with a non-empty id free of
-- colons, a form no other thread's key can take when the key was found by
-- a query on the thread's tag and, for a thread that is not plain, the root
-- namespace: another thread's extra ':'-separated part would leave a colon in
-- <id>, and a thread cut short at one of our colons has a shorter (case-folded)
-- tag, unlike ours when ours is the whole id. Else nil.
local function root_doc(key, prefix)
  if starts_with(key, prefix) and #key > #prefix and not key:find(':', #prefix + 1, true) then
    return { key = key, ns = ROOT_NS, id = key:sub(#prefix + 1) }
  end
  return nil
end

-- Redis access ---------------------------------------------------------------

-- The message of an error pcall caught from redis.call (a table) or Lua (a string).
local function error_text(err)
  return tostring(type(err) == 'table' and err.err or err)
end

-- What earlier calls learnt of this server (the library's state lives until
-- it is loaded again): the JSON module answers; the search result cap.
local server = { json = false, cap = nil }

-- FT.SEARCH with the server's errors turned into ones that say what to do.
-- Every search runs before the call's first write (see delete_doomed), so a
-- cap lowered since it was cached restarts the call, having changed nothing.
local function search(args)
  local ok, res = pcall(rcall, 'FT.SEARCH', unpack(args))
  if ok then
    return res
  end
  local err = error_text(res)
  if server.cap and err:find('LIMIT exceeds maximum', 1, true) then
    server.cap = nil
    error(Stale, 0)
  end
  if err:find('no such index', 1, true) or err:lower():find('unknown index', 1, true) then
    fail('NOINDEX', 'index ' .. show(args[1]) .. ' does not exist: run the saver\'s setup() first, '
      .. 'or pass the prefixes the saver uses (CHECKPOINT_PREFIX, WRITE_PREFIX)')
  end
  if err:find('nknown', 1, true) and err:find('command', 1, true) then
    fail('NOMODULE', 'this server has no RediSearch module: lgprune needs Redis 8 or Redis Stack '
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
      fail('NOMODULE', 'this server has no RedisJSON module: lgprune needs Redis 8 or Redis Stack '
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
-- module answers, and ctx.cap holds the search result cap. Both are probed
-- once per library load (modules do not unload; a changed cap is caught by
-- `search`).
local function check_server(ctx)
  if not server.json then
    require_json(ctx)
    server.json = true
  end
  server.cap = server.cap or result_cap(ctx)
  ctx.cap = server.cap
end

-- How many checkpoint index entries match `query` ($t: the thread's tag, $n:
-- the root namespace); by default those of the thread's tag, a superset of
-- the thread (the tag matches case-insensitively).
local function count_tagged(ctx, thread, query)
  local res = search({ ctx.cp, query or '@thread_id:{$t}', 'PARAMS', '4', 't', thread.tag, 'n', ROOT_NS,
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
    fail('PARTIAL', 'the index returned ' .. returned .. ' of ' .. expected
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

local WINDOW_START_MS = 1000 -- first span of the root window, widened x4
local WINDOW_SLACK = 16 -- root checkpoints a narrow window holds beyond keep
local CLOCK_SLACK_MS = 1000 -- how far ids and checkpoint_ts may disagree

-- Root checkpoints of a thread too large to list whole, without sorting it:
-- a window of the newest by checkpoint_ts, anchored at the latest pointer and
-- sized to hold more than `keep`: at most keep + WINDOW_SLACK, or with
-- view.wide at most view.limit (what `exact` needs), plus a page of any
-- view.page others (view.first when the thread is plain, else the first of
-- the root namespace: the index answers in the order it stored them). Any
-- listed checkpoint with `keep` newer ones listed beside it is provably not
-- among the newest `keep`, whatever was left out (the plan keeps the newest
-- `keep` listed: they are the witnesses). Returns the docs and whether the
-- witnesses are surely the true newest `keep`: the window was listed whole
-- and began before the keep-th newest id was made (the saver stamps
-- checkpoint_ts after making the id, on the same clock). Returns nil when no
-- latest pointer anchors the window (view.newest, see newest_root).
local function root_window(ctx, thread, keep, view)
  local prefix = checkpoint_prefix(ctx, thread, ROOT_NS)
  if not view.newest then
    return nil
  end
  local newest = view.newest.key
  local read, ts = pcall(json_get, newest, '$.checkpoint_ts')
  if not read or type(ts) ~= 'number' then
    return nil
  end
  local args = { ctx.cp, '', 'PARAMS', '4', 't', thread.tag, 'n', ROOT_NS, 'NOCONTENT' }
  local function query(range, n)
    -- the time range first: RediSearch then walks only the window's entries
    args[2] = '@checkpoint_ts:' .. range .. ' @thread_id:{$t} @checkpoint_ns:{$n}'
    return search(finish_query(args, n, false))
  end
  local function count_since(lo)
    return query(string.format('[%.3f +inf]', lo), 0)[1]
  end
  -- widen until the window holds more than `keep`, then narrow while it
  -- holds more than it needs to
  local limit = view.limit
  local target = view.wide and limit or math.min(limit, keep + WINDOW_SLACK)
  local short, span = 0, WINDOW_START_MS
  local count = count_since(ts - span)
  while count <= keep and span < ts do
    short, span = span, span * 4
    count = count_since(ts - span)
  end
  for _ = 1, 12 do
    if count <= target or span - short < 1 then
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
  local function add(keys, first, last)
    for i = first, math.min(#keys, last) do
      local doc = not listed[keys[i]] and root_doc(keys[i], prefix)
      if doc then
        listed[doc.key] = true
        docs[#docs + 1] = doc
      end
    end
  end
  add({ newest }, 1, 1)
  local window = query(string.format('[%.3f +inf]', lo), limit)
  add(window, 2, limit + 1)
  local ids = {}
  for _, d in ipairs(docs) do
    ids[#ids + 1] = d.id
  end
  table.sort(ids, function(a, b) return a > b end)
  local kth = ids[keep]
  local kth_ms = kth and uuid6_ms(kth)
  local exact = window[1] <= #window - 1 and kth_ms ~= nil and kth_ms >= lo + CLOCK_SLACK_MS
  local page = view.first
  if not page then
    args[2] = '@thread_id:{$t} @checkpoint_ns:{$n}'
    page = search(finish_query(args, view.page, false))
  end
  add(page, 2, view.page + 1)
  return docs, exact
end

-- The thread's checkpoints, as {key, ns, id}, under a view record:
--   limit   how many entries each listing may return;
--   sorted  false: the thread fits `limit` and is listed whole; true: the
--           newest `limit` of the namespaces other than the root and, for the
--           root, a root_window under `rule` when one can be anchored (else its
--           newest `limit`);
--   tagged  the number of entries tagged with the thread's id;
--   first   for a plain thread, the answer of the query on its tag alone
--           (every tagged entry when not sorted, the first `limit` when sorted);
--   page    how many of the root's others a root_window lists;
--   newest  the newest root checkpoint (newest_root), which anchors the window;
--   wide    whether that window holds up to `limit` (else only a few more
--           than KEEP: enough for the plan, too few to be `exact`).
-- Also returns whether the root's newest KEEP are surely listed (false only
-- for a root window that cannot prove it).
-- Root checkpoints are listed by key alone (NOCONTENT, the cheap path) and
-- kept only in the form root_doc proves. Checkpoints of other namespaces are
-- confirmed by their own thread_id and checkpoint_id fields, and by the key
-- the saver builds from them.
local function list_checkpoints(ctx, thread, view, rule)
  local docs, exact = nil, true
  local root_prefix = checkpoint_prefix(ctx, thread, ROOT_NS)
  local limit, sorted = view.limit, view.sorted
  if sorted and rule then
    docs, exact = root_window(ctx, thread, math.max(rule.keep, 1), view)
  end
  local others = true -- whether entries outside the root may be the thread's
  if not docs then
    docs, exact = {}, true
    local res = not sorted and view.first
    if not res then
      res = search_all(finish_query({ ctx.cp, '@thread_id:{$t} @checkpoint_ns:{$n}',
        'PARAMS', '4', 't', thread.tag, 'n', ROOT_NS, 'NOCONTENT' }, limit, sorted), limit, 1)
    end
    for i = 2, #res do
      docs[#docs + 1] = root_doc(res[i], root_prefix)
    end
    others = not sorted and #docs < view.tagged
  end
  local non_root = '@thread_id:{$t} -@checkpoint_ns:{$n}'
  if not others and not sorted then
    return docs, exact -- every tagged entry is one of its root checkpoints
  end
  if sorted and count_tagged(ctx, thread, non_root) == 0 then
    return docs, exact -- no entry of the thread's tag outside the root
  end
  local res = search_all(finish_query({ ctx.cp, non_root,
    'PARAMS', '4', 't', thread.tag, 'n', ROOT_NS, 'RETURN', '2', 'thread_id', 'checkpoint_id' },
    limit, sorted), limit, 2)
  local prefix = thread_prefix(ctx, thread)
  for i = 2, #res, 2 do
    local key, fields = res[i], res[i + 1]
    local f = {}
    for j = 1, #fields, 2 do
      f[fields[j]] = fields[j + 1]
    end
    local id = f.checkpoint_id
    if f.thread_id == thread.id and id and id ~= '' and #key > #prefix + #id + 1
      and starts_with(key, prefix) and key:sub(-#id - 1) == ':' .. id then
      local ns = key:sub(#prefix + 1, #key - #id - 1)
      if ns ~= ROOT_NS and key == checkpoint_key(ctx, thread, ns, id) then
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
    fail('BADDATA', 'checkpoint ' .. show(key) .. ' has unreadable metadata; nothing was deleted')
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
    local pkey = checkpoint_key(ctx, thread, ns, parent)
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
-- (see policy). Returns the plan: `doomed`, the docs that go, oldest first
-- within each namespace; `spared`, the number of delta ancestors kept;
-- `idle`, whether the thread was idle; `delta`, whether a kept checkpoint
-- rebuilds delta channels from its ancestors.
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
      local ns_prefix = checkpoint_prefix(ctx, thread, ns)
      local ok, latest = pcall(rcall, 'GET', latest_key(ctx, thread, ns))
      local latest_id = nil
      if ok and type(latest) == 'string' and starts_with(latest, ns_prefix) then
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
            fail('BADARG', 'the DeltaChannel history of ' .. show(key) .. ' is longer than '
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
  return { doomed = doomed, spared = spared, idle = idle, delta = delta }
end

-- Deleting -------------------------------------------------------------------------

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
    and (f['$.thread_id'] or {})[1] == thread.id
    and (f['$.checkpoint_ns'] or {})[1] == d.ns
    and (f['$.checkpoint_id'] or {})[1] == d.id
end

-- The doomed checkpoints by the start of their write keys: `prefix` maps
-- write_prefix(d) to d, `lengths` lists the lengths those prefixes have
-- (usually one: root namespace, uuid ids).
local function write_owners(ctx, thread, doomed)
  local owners, seen = { prefix = {}, lengths = {} }, {}
  for _, d in ipairs(doomed) do
    local prefix = write_prefix(ctx, thread, d)
    owners.prefix[prefix] = d
    d.plain = thread.plain and not d.ns:find(':', 1, true) and not d.id:find(':', 1, true)
    if not seen[#prefix] then
      seen[#prefix] = true
      owners.lengths[#owners.lengths + 1] = #prefix
    end
  end
  return owners
end

-- Sort write keys from a writes-index answer to the doomed checkpoint each
-- belongs to (see write_owners): a key counts when it starts with a doomed
-- checkpoint's write prefix, ending at a colon, and `owns` confirms it.
local function match_writes(res, thread, owners, found)
  local by_prefix, lengths = owners.prefix, owners.lengths
  for i = 2, #res do
    local key = res[i]
    for _, len in ipairs(lengths) do
      local d = key:byte(len) == 58 and by_prefix[key:sub(1, len)] -- 58: ':'
      if d and owns(thread, d, key, len) then
        local list = found[d.id]
        if not list then
          list = {}
          found[d.id] = list
        end
        list[#list + 1] = key
        break
      end
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
-- thread tagged `tag`, by id. The id clause comes first: RediSearch then
-- walks the few entries of those ids, not every write of a large thread.
local function writes_query(ctx, thread, chunk)
  local query, args = {}, { ctx.wp, '', 'PARAMS', tostring(2 * #chunk + 2), 't', thread.tag }
  for i, d in ipairs(chunk) do
    query[#query + 1] = '$c' .. i
    args[#args + 1] = 'c' .. i
    args[#args + 1] = d.param
  end
  args[2] = '@checkpoint_id:{' .. table.concat(query, ' | ') .. '} @thread_id:{$t}'
  args[#args + 1] = 'NOCONTENT'
  return args
end

-- The writes index's answer for the doomed checkpoints from position `first`
-- on, within `limit` entries: up to WRITES_CHUNK of them, as many as fit by
-- `per` writes each, halved while their writes do not fit, down to one (whose
-- writes may then take several calls). Returns the chunk, the answer, whether
-- it was cut short and the entries read (every answer counts against `limit`).
local function next_chunk(ctx, thread, doomed, first, limit, per)
  local size, spent = math.max(1, math.min(WRITES_CHUNK, math.floor(limit / math.max(per, 1)))), 0
  while true do
    local chunk = {}
    for j = first, math.min(first + size - 1, #doomed) do
      chunk[#chunk + 1] = doomed[j]
    end
    local res = search(finish_query(writes_query(ctx, thread, chunk), limit - spent, false))
    spent = spent + #res - 1
    local truncated = res[1] > #res - 1
    if #chunk == 1 or not truncated or spent >= limit then
      return chunk, res, truncated, spent
    end
    size = math.floor(#chunk / 2)
  end
end

-- Collects keys to delete; flush() deletes them in fixed-size batches (or, in
-- a dry run, counts those that exist). Nothing is deleted before flush(), so
-- every search of a thread runs before its first delete.
local function sink(dry)
  local self = { pending = {}, deleted = 0 }
  function self.flush()
    local p = self.pending
    for i = 1, #p, UNLINK_BATCH do
      local last = math.min(i + UNLINK_BATCH - 1, #p)
      if dry then
        self.deleted = self.deleted + rcall('EXISTS', unpack(p, i, last))
      else
        local n = rcall('UNLINK', unpack(p, i, last))
        self.deleted = self.deleted + n
        deleted_this_call.keys = deleted_this_call.keys + n
      end
    end
    self.pending = {}
  end
  function self.add(key)
    local p = self.pending
    p[#p + 1] = key
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
local function delete_doomed(ctx, thread, doomed, whole)
  local ckpts, writes, others = sink(ctx.dry), sink(ctx.dry), sink(ctx.dry)
  local left = ctx.dry and math.huge or ctx.budget
  local read_left = math.min(2 * ctx.budget, ctx.cap)
  -- only what the budget can delete, by the first one's keys (itself, its
  -- writes by its registry, the registry), is looked at this call
  local trimmed = false
  local per = #doomed > 0 and rcall('ZCARD', registry_key(thread, doomed[1])) or 0 -- writes, by the first
  if not ctx.dry and #doomed > 0 then
    local fit = math.floor(left / (per + 2)) + 1
    if #doomed > fit then
      local first = {}
      for i = 1, fit do
        first[i] = doomed[i]
      end
      doomed, trimmed = first, true
    end
  end
  local owners = write_owners(ctx, thread, doomed)
  local found -- the writes of every doomed checkpoint, when one query holds them
  local thread_writes = { ctx.wp, '@thread_id:{$t}', 'PARAMS', '2', 't', thread.tag, 'NOCONTENT' }
  -- too many writes for one answer, by the first checkpoint's registry? then per chunk
  if #doomed > 0 and whole then
    whole = per * #doomed <= read_left
  end
  if #doomed > 0 and whole then
    local res = search(finish_query(thread_writes, read_left, false))
    if res[1] <= #res - 1 then
      read_left = read_left - (#res - 1)
      found = {}
      match_writes(res, thread, owners, found)
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
  local more, stop = trimmed, false
  local i = 1
  while i <= #doomed and not stop do
    local chunk, chunk_found, truncated
    if found then
      chunk, chunk_found, truncated = { doomed[i] }, found, false
    elseif read_left < 1 then
      more = true
      break
    else
      local res, spent
      chunk, res, truncated, spent = next_chunk(ctx, thread, doomed, i, read_left, per)
      read_left = read_left - spent
      chunk_found = {}
      match_writes(res, thread, owners, chunk_found)
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
        more, stop = true, true
        break
      end
      ckpts.add(d.key)
      others.add(registry_key(thread, d))
      if d.newest then
        others.add(latest_key(ctx, thread, d.ns))
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
  if ctx.checked.write_prefix then
    return -- once per call: the saver's prefix is the same for every thread
  end
  for i = 1, math.min(#doomed, 8) do
    local d = doomed[i]
    local member = rcall('ZRANGE', registry_key(thread, d), 0, 0)[1]
    if member then
      local want = write_prefix(ctx, thread, d)
      if not starts_with(member, want) then
        fail('BADARG', 'the writes of ' .. show(d.key) .. ' are stored as ' .. show(member)
          .. ', not under WRITE_PREFIX ' .. show(ctx.wp) .. ': pass the saver\'s '
          .. 'checkpoint_write_prefix; nothing was deleted')
      end
      ctx.checked.write_prefix = true
      return
    end
  end
end

-- One thread ------------------------------------------------------------------------

local PAGE_SLACK = 16 -- checkpoints listed beyond what the budget is expected to delete

-- The thread's newest root checkpoint, as the latest pointer names it (a doc),
-- or nil when the pointer is missing or not of root_doc's form.
local function newest_root(ctx, thread)
  local ok, newest = pcall(rcall, 'GET', latest_key(ctx, thread, ROOT_NS))
  return ok and type(newest) == 'string' and root_doc(newest, checkpoint_prefix(ctx, thread, ROOT_NS))
    or nil
end

-- Keys a root checkpoint of the thread takes with it, judged by the newest
-- one (a doc, or nil): itself, its registry and the writes listed there.
local function keys_per_checkpoint(thread, newest)
  if not newest then
    return 3
  end
  return rcall('ZCARD', registry_key(thread, newest)) + 2
end

-- The counts each prune reports, in reply order (lgprune_thread and
-- lgprune_many add `more` / `next`), at zero.
local COUNT_FIELDS = { 'checkpoints_deleted', 'writes_deleted', 'keys_deleted',
  'checkpoints_kept', 'delta_ancestors_kept' }
local function zero_counts()
  local out = {}
  for _, name in ipairs(COUNT_FIELDS) do
    out[name] = 0
  end
  return out
end

-- The first look at a thread: how many entries carry its tag (`counted`, when
-- a sweep counted them already) and, for a plain thread, the answer of the
-- query on the tag alone (up to `limit` entries), which is then also its
-- listing. Either way one pass over its entries.
local function first_look(ctx, thread, limit, counted)
  if not thread.plain then
    return counted or count_tagged(ctx, thread), nil
  end
  local res = search_all(finish_query({ ctx.cp, '@thread_id:{$t}', 'PARAMS', '2', 't', thread.tag,
    'NOCONTENT' }, limit, false), limit, 1)
  return res[1], res
end

-- Whether checkpoint `key` rebuilds DeltaChannel values from its ancestors,
-- by its metadata (see delta_channels).
local function uses_delta(key)
  local ok, meta = pcall(json_get, key, '$.metadata')
  return ok and type(meta) == 'string' and meta:find('counters_since_delta_snapshot', 1, true) ~= nil
end

-- List and plan the thread under `view` (see list_checkpoints); a partial
-- view first looks at a page sized by what the budget deletes (by the keys of
-- the newest checkpoint), and at the whole view when that page frees nothing
-- (DeltaChannel ancestors may hold all of it). Delta history is walked from
-- the true newest: its window is wide from the start when the newest
-- checkpoint uses DeltaChannel, else widened when the plan finds delta
-- history, and when the listing still cannot prove it holds the newest, they
-- are listed again, sorted. Returns the docs and the plan.
local function list_and_plan(ctx, thread, view, rule)
  view.page = view.limit
  if view.sorted then
    view.newest = newest_root(ctx, thread)
    view.wide = view.newest ~= nil and uses_delta(view.newest.key)
    if not ctx.dry then
      view.page = math.min(view.limit, math.ceil(ctx.budget / keys_per_checkpoint(thread, view.newest))
        + math.min(rule.keep, view.limit) + PAGE_SLACK)
    end
  end
  local docs, exact = list_checkpoints(ctx, thread, view, rule)
  local p = plan(ctx, thread, docs, rule, ctx.budget)
  if #p.doomed == 0 and view.page < view.limit then
    view.page = view.limit
    docs, exact = list_checkpoints(ctx, thread, view, rule)
    p = plan(ctx, thread, docs, rule, ctx.budget)
  end
  if p.delta and not exact and not view.wide then
    view.wide = true
    docs, exact = list_checkpoints(ctx, thread, view, rule)
    p = plan(ctx, thread, docs, rule, ctx.budget)
  end
  if p.delta and not exact then
    view.first = nil
    docs = list_checkpoints(ctx, thread, view, nil)
    p = plan(ctx, thread, docs, rule, ctx.budget)
  end
  return docs, p
end

-- Prune one thread (a thread record) under `rule` within ctx.budget.
-- Returns the counts of lgprune_thread, plus `idle`, `listed` and
-- `count_exact` (whether checkpoints_kept is exact) for sweeps.
local function prune_thread(ctx, thread, rule)
  local out = zero_counts()
  out.more, out.idle, out.listed, out.count_exact = 0, false, false, true
  local counted
  if ctx.sweep and not ctx.details and not rule.idle_before then
    -- most threads a sweep visits are within keep: a count settles those
    counted = count_tagged(ctx, thread)
    if counted <= rule.keep then
      out.checkpoints_kept, out.count_exact = counted, counted == 0
      return out -- nothing over keep (the tag count is an upper bound)
    end
  end
  local limit = math.min(ctx.budget + math.min(rule.keep, ctx.cap), ctx.cap)
  local tagged, first = first_look(ctx, thread, limit, counted)
  out.checkpoints_kept = tagged
  if tagged == 0 then
    return out
  end
  -- the whole thread when it fits the budget, else its newest entries
  local view = { limit = math.min(tagged, limit), tagged = tagged, first = first }
  view.sorted = view.limit < tagged
  local docs, p = list_and_plan(ctx, thread, view, rule)
  out.listed = true
  check_write_prefix(ctx, thread, p.doomed)
  local done = delete_doomed(ctx, thread, p.doomed, not view.sorted)
  out.checkpoints_deleted = done.checkpoints
  out.writes_deleted = done.writes
  out.keys_deleted = done.keys
  out.delta_ancestors_kept = p.spared
  out.idle = p.idle
  if view.sorted then
    out.checkpoints_kept = tagged - done.checkpoints -- an upper bound
    out.count_exact = false
  else
    out.checkpoints_kept = #docs - done.checkpoints
  end
  -- a partial view has more to look at whenever this call got somewhere
  if done.more or (view.sorted and not ctx.dry and done.checkpoints > 0) then
    out.more = 1
  end
  return out
end

-- Flatten counts into a name/value reply: COUNT_FIELDS, then `last` (when
-- given), or the names in `fields`.
local function reply(out, last, fields)
  local r = {}
  for _, name in ipairs(fields or COUNT_FIELDS) do
    r[#r + 1] = name
    r[#r + 1] = out[name]
  end
  if last then
    r[#r + 1] = last
    r[#r + 1] = out[last]
  end
  return r
end

-- Add the counts of `part` into `total`.
local function add_counts(total, part)
  for _, name in ipairs(COUNT_FIELDS) do
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
  if not ok or type(target) ~= 'string' or not starts_with(target, ctx.cp .. ':') then
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
  local thread, d = { id = t }, { ns = ns, id = id }
  if not starts_with(key, write_prefix(ctx, thread, d)) then
    return false -- not stored where the saver would store it: not ours to judge
  end
  return rcall('EXISTS', checkpoint_key(ctx, thread, ns, id)) == 0 and older(id, before)
end

-- A write registry: write_keys_zset:<stem> lists writes <wp>:<stem>:..., and
-- the checkpoint <cp>:<stem> is gone. (Registries of other prefixes list
-- other write keys and are left alone.)
local function orphan_registry(ctx, key, before)
  local checkpoint, writes = registry_owner(ctx, key)
  local ok, first = pcall(rcall, 'ZRANGE', key, 0, 0)
  if not ok or type(first[1]) ~= 'string' or not starts_with(first[1], writes) then
    return false
  end
  return rcall('EXISTS', checkpoint) == 0 and older(key:match(':([^:]*)$'), before)
end

-- Sweeps -----------------------------------------------------------------------------

-- A sweep call's state: the counts of its reply (`out`), the threads it saw,
-- the keys it may still delete (`left`), the visits and checks it made
-- (`work`, in budget units) and the orphans found.
local function sweep_state(ctx, rule, opts)
  return {
    ctx = ctx, rule = rule, opts = opts,
    before = now_ms() - (opts.GRACE or DEFAULT_GRACE_MS),
    out = { threads_visited = 0, threads_pruned = 0, threads_deleted = 0, threads_skipped = 0,
      checkpoints_deleted = 0, writes_deleted = 0, keys_deleted = 0, orphans_deleted = 0 },
    seen = {}, details = {}, left = ctx.budget, work = 0, orphans = sink(ctx.dry),
  }
end

-- The thread ids that the latest pointers among `keys` name: each pointer's
-- checkpoint's own thread_id, read with one JSON.MGET per UNLINK_BATCH
-- pointers of a SCAN step (not MGET for the pointers: the README's ACL has no
-- +mget). Maps a pointer key to its id; a pointer whose value is not a string
-- naming a JSON document with a string thread_id is left out.
local function pointer_threads(ctx, keys)
  local latest, named, docs, ids = latest_start(ctx), {}, {}, {}
  local function read()
    docs[#docs + 1] = '$.thread_id'
    local values = rcall('JSON.MGET', unpack(docs)) -- a missing or non-JSON key reads as nil
    for i, raw in ipairs(values) do
      local value = type(raw) == 'string' and cjson.decode(raw)[1]
      if type(value) == 'string' then
        ids[named[i]] = value
      end
    end
    named, docs = {}, {}
  end
  for _, key in ipairs(keys) do
    local ok, target = false, nil
    if starts_with(key, latest) then
      ok, target = pcall(rcall, 'GET', key) -- fails for a key of another type
    end
    if ok and type(target) == 'string' then
      named[#named + 1] = key
      docs[#docs + 1] = target
      if #docs == UNLINK_BATCH then
        read()
      end
    end
  end
  if #docs > 0 then
    read()
  end
  return ids
end

-- Prune thread `id`, which latest pointer `key` names (or, when it names
-- none, judge the pointer an orphan); false when the call must stop before it.
local function sweep_pointer(sw, key, id)
  local ctx, out = sw.ctx, sw.out
  if not id then
    sw.work = sw.work + CHECK_COST
    if sw.opts.ORPHANS and orphan_pointer(ctx, key, sw.before) then
      sw.orphans.add(key)
    end
    return true
  end
  if sw.seen[id] then
    return true
  end
  local deleted = ctx.budget - sw.left
  if sw.left < MIN_BUDGET or (not ctx.dry and deleted > 0 and sw.work + deleted >= ctx.budget) then
    return false -- this call has spent its budget and deleted something: resume here
  end
  sw.seen[id] = true
  sw.work = sw.work + VISIT_COST
  out.threads_visited = out.threads_visited + 1
  local thread = thread_record(id == EMPTY_ID and '' or id)
  if not thread then
    out.threads_skipped = out.threads_skipped + 1
    return true
  end
  local done = prune_thread(with_budget(ctx, sw.left), thread, sw.rule)
  if sw.opts.DETAILS then
    sw.details[#sw.details + 1] = { id, done.checkpoints_kept + done.checkpoints_deleted,
      done.checkpoints_deleted, done.keys_deleted, done.count_exact and 1 or 0 }
  end
  add_counts(out, done)
  sw.left = sw.left - done.keys_deleted
  if done.listed then
    sw.work = sw.work + LIST_COST
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

-- Judge a write or registry key an orphan (ORPHANS).
local function sweep_orphan(sw, key)
  local ctx = sw.ctx
  local is_write = starts_with(key, ctx.wp .. ':')
  local is_registry = starts_with(key, ZSET_PREFIX .. ':')
  if is_write or is_registry then
    sw.work = sw.work + CHECK_COST
    if (is_write and orphan_write(ctx, key, sw.before))
      or (is_registry and orphan_registry(ctx, key, sw.before)) then
      sw.orphans.add(key)
    end
  end
end

-- Visit the keys of one SCAN step; false when the call stopped inside it.
local function sweep_keys(sw, keys)
  local latest = latest_start(sw.ctx)
  local ids = pointer_threads(sw.ctx, keys)
  for _, key in ipairs(keys) do
    if starts_with(key, latest) then
      if not sweep_pointer(sw, key, ids[key]) then
        return false -- this call deleted what its budget allowed: resume this step
      end
    elseif sw.opts.ORPHANS then
      sweep_orphan(sw, key)
    end
  end
  return true
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
  local thread = check_thread(args[1])
  check_server(ctx)
  return reply(prune_thread(ctx, thread, rule), 'more')
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
    fail('BADARG', 'COUNT must be 1 to 1000 thread ids, got ' .. count)
  end
  local opts = parse_options(args, count + 3, THREAD_OPTIONS)
  local rule = policy(args[1], opts)
  local ctx = context(opts)
  local threads = {}
  for i = 1, count do
    threads[i] = check_thread(args[i + 2])
  end
  check_server(ctx)
  local total = zero_counts()
  total.next = 0
  local left = ctx.budget
  for i, thread in ipairs(threads) do
    if left < MIN_BUDGET then
      total.next = i
      break
    end
    local out = prune_thread(with_budget(ctx, left), thread, rule)
    add_counts(total, out)
    left = left - out.keys_deleted
    if out.more == 1 then
      total.next = i
      break
    end
  end
  return reply(total, 'next')
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
             visit 10 (50 when it lists the thread), an orphan check 3, a SCAN
             step 1 per 8 keys it examines (200 per step, 50 with ORPHANS).
             A call stops once it is spent: in the middle of a SCAN step when
             it has deleted something (the next call reads that step again),
             else at the end of the step.
  ORPHANS    also delete writes, write registries and latest pointers whose
             checkpoint is gone, when that checkpoint's id is older than GRACE
             (ms, default 600000: writes can be stored before their checkpoint).
  DETAILS    add `threads`: per visited thread, [thread_id, checkpoints,
             checkpoints_deleted, keys_deleted, exact]: every thread is listed
             and its own checkpoints counted (exact 1), except one too large
             for a call's listing (BUDGET + KEEP checkpoints), whose count is
             an upper bound (exact 0). For `lgprune stats`.
  Threads are found by SCAN over the latest pointers (<cp>_latest:*); each
  pointer's checkpoint names its thread exactly (read for a whole step at
  once). Threads already within KEEP cost one index count. Thread ids the
  index cannot match are skipped.
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
    fail('BADARG', 'CURSOR must be "0" or a cursor returned by lgprune_sweep, got ' .. show(cursor))
  end
  local opts = parse_options(args, 3, SWEEP_OPTIONS)
  local rule = policy(args[2], opts)
  local ctx = context(opts)
  ctx.sweep = true
  ctx.details = opts.DETAILS == true
  check_server(ctx)
  local sw = sweep_state(ctx, rule, opts)
  local count = opts.ORPHANS and SCAN_COUNT or POINTER_SCAN_COUNT
  local scan = { 'SCAN', cursor, 'COUNT', count }
  if not opts.ORPHANS then
    scan = { 'SCAN', cursor, 'MATCH', glob_escape(latest_start(ctx)) .. '*', 'COUNT', count }
  end
  local step_cost = math.ceil(count / SCAN_KEYS_PER_UNIT)
  local finished -- whether the last SCAN step was visited whole
  while true do
    scan[2] = cursor
    local res = rcall(unpack(scan))
    finished = sweep_keys(sw, res[2])
    sw.work = sw.work + step_cost
    if finished then
      cursor = res[1]
    end
    if not finished or cursor == '0' or sw.work + (ctx.budget - sw.left) >= ctx.budget then
      break
    end
  end
  local out, orphans = sw.out, sw.orphans
  orphans.flush()
  out.orphans_deleted = orphans.deleted
  out.keys_deleted = out.keys_deleted + orphans.deleted
  if not finished and cursor == '0' then
    cursor = '00' -- stopped inside the first step: SCAN reads '00' as 0, the caller as not done
  end
  out.cursor = cursor
  local r = reply(out, nil, SWEEP_FIELDS)
  if opts.DETAILS then
    r[#r + 1] = 'threads'
    r[#r + 1] = sw.details
  end
  return r
end

redis.register_function { function_name = 'lgprune_version', callback = lgprune_version,
  flags = { 'no-writes' } }
redis.register_function { function_name = 'lgprune_thread', callback = entry(lgprune_thread) }
redis.register_function { function_name = 'lgprune_many', callback = entry(lgprune_many) }
redis.register_function { function_name = 'lgprune_sweep', callback = entry(lgprune_sweep) }
