#!lua name=lgprune
--[[
lgprune: keep the newest N checkpoints of a LangGraph thread stored by
langgraph-checkpoint-redis 0.3.6 to 0.5.x (LAYOUT python) or by LangGraph.js's
@langchain/langgraph-checkpoint-redis 1.0 (LAYOUT js), and delete the rest,
inside Redis.

This file is built: its parts are lua/src/*.lua, joined in name order by
`python lua/build.py` (CI checks the join is current). Edit the parts. Each
part keeps its functions in one table, named here; its header says what it
provides and what it assumes of the others (build.py checks both).
  00-head                   this overview, the version
  10-core         Core      redis.call, errors, options, the call's budget,
                            batches
  20-keys         Keys      the layouts and the call's context, UTF-8, tags,
                            thread records, the search probe, every key name
  30-search       Search    the modules, the one FT.SEARCH builder, searches,
                            JSON reads
  40-listing      Listing   a thread's checkpoints: first look, root window,
                            listing
  50-plan         Plan      what goes: the rules per namespace, DeltaChannel
                            history
  55-blobs        Blobs     the js saver's channel-value blobs a plan frees
  60-delete       Delete    a plan's keys found, confirmed and deleted within
                            the budget
  70-thread       Thread    one thread, start to end
  80-sweep        Sweep     a sweep's visits (failures as data), the orphans
                            phase
  85-incremental  Pass      passes: full and incremental, watermarks, time
                            segments (the one way a sweep finds threads)
  90-entry                  the registered functions, each with its contract

Data layout (values are storage-safe: thread "" is stored as EMPTY_ID,
namespace "" as ROOT_NS):
  <cp>:<thread>:<ns>:<checkpoint_id>               JSON checkpoint, index <cp>
  <wp>:<thread>:<ns>:<checkpoint_id>:<task>:<idx>  JSON write, index <wp>
  write_keys_zset:<thread>:<ns>:<checkpoint_id>    zset registry of its writes
  <cp>_latest:<thread>:<ns>                        key of the newest checkpoint
LAYOUT js (the prefixes are fixed: checkpoint, checkpoint_write): indexes
checkpoints and checkpoint_writes; keys spell the root namespace "" (its
checkpoint documents still say ROOT_NS, its writes ""); TAG values are not
split at commas; thread "" is not stored; no latest pointers; channel values
in shared blobs checkpoint_blob:<thread>:<ns>:<channel>:<version> (index
checkpoint_blobs), which a checkpoint reads back by its channel_versions.
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
  * the checkpoint a namespace's latest pointer names stays while the
    namespace keeps any checkpoint, and counts as kept (its DeltaChannel
    history, its subgraph runs);
  * a deleted checkpoint takes its writes (found through the writes index),
    its write_keys_zset, and, when its namespace goes whole in that call,
    the namespace's latest pointer;
  * js: a blob goes when no checkpoint left in its namespace reads it back
    and the checkpoint that wrote it is not being stored now.
Work per call is bounded by a budget; a caller repeats while `more` is 1.
An error reply means the call deleted nothing: everything a thread needs is
validated and read before its first delete, and a thread that fails after
another thread of the same call deleted something ends the call there,
successfully, to be started again (and fail, having deleted nothing) by the
next call. A sweep names a thread it cannot prune in its reply and goes on.
Every error is "LGPRUNE <CODE> <message>".
]]

local VERSION = '0.4.0'
-- Which code this is: the Python package loads the library with this set to
-- a hash of the file, so a cheap probe tells its own code from any other.
local BUILD = 'dev'

-- Core ------------------------------------------------------------------------
-- redis.call, errors (every error an LGPRUNE <CODE> reply), option parsing, the rule (policy), the
-- call's budget, batches.
-- Provides: BATCH, DEFAULT_BUDGET, MAX_MANY, MIN_BUDGET, Stale, batches, entry, error_text, fail, guard,
--   keys_left, new_budget, now_ms, parse_count, parse_options, policy, rcall, reads_left, show,
--   thread_failure, unknown_command
-- Assumes: nothing
local Core = {}

-- redis.call is not reachable while the library loads, so wrap it
local function rcall(...)
  return redis.call(...)
end

Core.DEFAULT_BUDGET = 2000
Core.MAX_BUDGET = 100000
local MIN_BUDGET = 10 -- enough for any call to make progress
local MAX_MANY = 1000 -- thread ids per lgprune_many call
Core.BATCH = 500 -- keys per UNLINK or JSON.MGET: never unpack an unbounded list

-- Errors -------------------------------------------------------------------
-- Every error reply is "LGPRUNE <CODE> <message>"; the Python package maps
-- the code (never the wording) to an exception class:
local ERROR_CODES = {
  'BADARG', -- an argument, option or thread id lgprune refuses
  'NOINDEX', -- the saver's index does not exist (or the prefixes are not the saver's)
  'NOMODULE', -- the server lacks the search or JSON module
  'BADDATA', -- a stored document lgprune cannot read
  'PARTIAL', -- a search answered partially (a timeout?): try again
  'MIXED', -- both savers' indexes cover the same keys: whose a key is cannot be told
  'NOPERM', -- the ACL lets this user read a key the prune must delete, but not delete it
}
-- An error reply means the call deleted nothing (see entry and guard).

Core.Failure = {}

-- Abort the thread or call with "LGPRUNE <code> <msg>", code one of ERROR_CODES.
function Core.fail(code, msg)
  local known = false
  for _, c in ipairs(ERROR_CODES) do
    known = known or c == code
  end
  assert(known, code)
  error(setmetatable({ code = code, msg = msg }, Core.Failure), 0)
end

-- The message of an error pcall caught from redis.call (a table) or Lua (a string).
function Core.error_text(err)
  return tostring(type(err) == 'table' and err.err or err)
end

-- Whether an error says the command does not exist (a module is missing).
function Core.unknown_command(text)
  return text:find('nknown', 1, true) ~= nil and text:find('command', 1, true) ~= nil
end

-- Raised when a fact cached from an earlier call, the search result cap, no
-- longer holds: the thread is planned again in a fresh call (see entry).
Core.Stale = {}

-- Every error as a Failure: a Failure as it is; an error Redis answered a
-- command with as NOPERM when the ACL refused it, else BADDATA (a key of
-- another type than the saver writes, a value it cannot read); a Lua error
-- (data lgprune did not expect) as BADDATA too.
function Core.as_failure(err)
  if getmetatable(err) == Core.Failure then
    return err
  end
  local text = Core.error_text(err)
  if text:find('NOPERM', 1, true) or text:find('No permissions', 1, true) or text:find('ACL failure', 1, true) then
    return setmetatable({ code = 'NOPERM', msg = 'this user may not run a command lgprune needs (' .. text
      .. '): grant it the README\'s ACL; nothing was deleted' }, Core.Failure)
  end
  return setmetatable({ code = 'BADDATA', msg = 'Redis refused a read of stored data (' .. text
    .. '); nothing was deleted' }, Core.Failure)
end

-- Failures of the whole call, never of one thread: where they stand, no
-- thread of the store can be pruned.
Core.CALL_FAILURES = { NOINDEX = true, NOMODULE = true, MIXED = true, NOPERM = true }

-- Why a thread of a sweep cannot be pruned ("<CODE> <message>"), for an error
-- it raised before its first delete; an error of the whole call (and Stale)
-- is raised again.
function Core.thread_failure(err)
  local f = err ~= Core.Stale and Core.as_failure(err)
  if not f or Core.CALL_FAILURES[f.code] then
    error(err, 0)
  end
  return f.code .. ' ' .. f.msg
end

-- Wrap a registered function so that every error becomes an "LGPRUNE <CODE>"
-- reply. A Stale runs the call again from scratch. Functions that prune
-- several threads catch every error of a thread after a delete themselves
-- (see guard and visit), so an error reaching here comes before the call's
-- first delete, and the reply means nothing was deleted.
function Core.entry(body)
  return function(keys, args)
    local ok, res = pcall(body, keys, args)
    if not ok and res == Core.Stale then
      ok, res = pcall(body, keys, args)
    end
    if ok then
      return res
    end
    if res == Core.Stale then
      res = { code = 'PARTIAL', msg = 'the search result cap changed during the call; nothing was deleted, try again' }
    else
      res = Core.as_failure(res)
    end
    return redis.error_reply('LGPRUNE ' .. res.code .. ' ' .. res.msg)
  end
end

-- A short printable rendering of a user value for error messages.
function Core.show(s)
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
function Core.parse_count(name, s, max)
  if type(s) ~= 'string' or not s:match('^%d+$') then
    Core.fail('BADARG', name .. ' must be a non-negative integer, got ' .. Core.show(s))
  end
  local n = tonumber(s)
  if n > max then
    n = max
  end
  return n
end

-- Read options from args[first..]: flags and NAME value pairs, case-insensitive.
-- spec maps an upper-case option name to 'flag', 'count', 'ms' or 'string'.
function Core.parse_options(args, first, spec)
  local opts = {}
  local i = first
  while i <= #args do
    local name = string.upper(args[i])
    local kind = spec[name]
    if kind == nil then
      Core.fail('BADARG', 'unknown option ' .. Core.show(args[i]))
    elseif kind == 'flag' then
      opts[name] = true
      i = i + 1
    else
      local value = args[i + 1]
      if value == nil then
        Core.fail('BADARG', name .. ' needs a value')
      end
      if kind == 'count' then
        opts[name] = Core.parse_count(name, value, Core.MAX_BUDGET)
      elseif kind == 'ms' then
        opts[name] = Core.parse_count(name, value, 2 ^ 53)
      else
        opts[name] = value
      end
      i = i + 2
    end
  end
  return opts
end

-- The server's clock in milliseconds.
function Core.now_ms()
  local t = rcall('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The budget ------------------------------------------------------------------

-- The budget of one call, made once from BUDGET and passed to what spends it:
--   total  BUDGET: keys one call may delete, and the bound of its reads
--   keys   keys this call has deleted (a dry run deletes none and spends none)
--   work   units a sweep charged for visits, checks and SCAN steps
--   dry    DRY_RUN: nothing is deleted, and what would go is counted uncapped
function Core.new_budget(total, dry)
  return { total = total, keys = 0, work = 0, dry = dry }
end

-- Keys the call may still delete (uncapped in a dry run).
function Core.keys_left(b)
  return b.dry and math.huge or b.total - b.keys
end

-- What a thread may read or walk this call: BUDGET less the keys deleted.
function Core.reads_left(b)
  return b.total - b.keys
end

-- Run fn(...) for one thread of a call that prunes several: true and its
-- result, or false when it failed after this call deleted something (then
-- the call ends there, and the next call starts with that thread and a whole
-- BUDGET: a thread that needs more than what was left, such as a DeltaChannel
-- walk longer than reads_left, is pruned then, and any other error comes
-- before that call's first delete). Errors before the first delete, and Stale
-- then, pass on. The one place that tells "end the call" from "fail it".
function Core.guard(b, fn, ...)
  local ok, res = pcall(fn, ...)
  if ok then
    return true, res
  end
  if b.keys > 0 then
    return false
  end
  error(res, 0)
end

-- What to keep: KEEP newest per namespace; with MAX_AGE also every
-- checkpoint younger than that; with IDLE_TTL nothing of a thread whose
-- newest checkpoint is older than that. Ages come from uuid6 checkpoint ids.
function Core.policy(keep_arg, opts)
  local now = (opts.MAX_AGE or opts.IDLE_TTL) and Core.now_ms()
  return {
    keep = Core.parse_count('KEEP', keep_arg, 2 ^ 53),
    old_before = opts.MAX_AGE and now - opts.MAX_AGE,
    idle_before = opts.IDLE_TTL and now - opts.IDLE_TTL,
  }
end

-- The ranges [first, last] of 1..n in steps of `size`: for first, last in batches(n, size).
function Core.batches(n, size)
  local first = 1 - size
  return function()
    first = first + size
    if first <= n then
      return first, math.min(first + size - 1, n)
    end
  end
end

-- Keys ------------------------------------------------------------------------
-- The savers' layouts and the call's context, thread records and TAG values, uuid6 times, the probe
-- of the search module, and every key name lgprune reads or deletes (nothing else joins key parts).
-- `ctx` is a context; `thread` a thread record; `d` a checkpoint doc { key, ns, id }: ns as its
-- keys spell it (ctx.root for the root), ids as stored.
-- Provides: DEFAULT_GRACE_MS, LAYOUTS, ROOT_NS, WATERMARKS, ZSET_PREFIX, blob_key, check_thread,
--   checkpoint_key, checkpoint_prefix, context, dense_key, id_param, latest_key, latest_start, older, probe,
--   registry_key, registry_owner, root_doc, search_failure, starts_with, thread_prefix, thread_record,
--   uuid6_ms, write_prefix
-- Assumes: MIN_BUDGET, rcall, Core.DEFAULT_BUDGET, Core.error_text, Core.fail, Core.new_budget, Core.show,
--   Core.unknown_command
local Keys = {}

local EMPTY_ID = '00000000-0000-0000-0000-000000000000' -- how the saver stores thread ""
Keys.ROOT_NS = '__empty__' -- how the saver stores namespace ""
Keys.ZSET_PREFIX = 'write_keys_zset'
Keys.MAX_TAG_BYTES = 4096 -- longer TAG values are not matched by RediSearch
Keys.UUID_EPOCH = 122192928000000000 -- 1582-10-15 to 1970-01-01 in 100 ns
Keys.DEFAULT_GRACE_MS = 600000 -- keys younger than this may belong to a write in flight
-- lgprune's own key, outside the saver's prefixes: a hash of sweep rules, each
-- to the server time (ms) at which its last complete pass began.
local WATERMARKS = 'lgprune:watermarks'
-- ... and the prefix of its keys holding the threads of a dense millisecond (see dense_key).
local DENSE = 'lgprune:dense'

-- The savers' layouts (LAYOUT python|js): what differs between the keys and
-- indexes of langgraph-checkpoint-redis (python) and LangGraph.js's
-- @langchain/langgraph-checkpoint-redis 1.0 (js), which share the key prefixes:
--   cp_index, wp_index  the index names (python: the prefixes themselves)
--   root       how keys spell the root namespace (documents say ROOT_NS in both,
--              but js writes say "")
--   commas     TAG values split at commas (and are trimmed); js: one value
--   pointers   <cp>_latest:<thread>:<ns> names each namespace's newest checkpoint
--   blobs      channel values in shared blob keys (see Blobs), and their index
--   empty_id   how thread "" is stored (js stores no empty thread id)
--   cp, wp     the key prefixes: python's defaults, fixed in js
Keys.LAYOUTS = {
  python = { name = 'python', cp = 'checkpoint', wp = 'checkpoint_write', root = Keys.ROOT_NS, commas = true,
    pointers = true, empty_id = EMPTY_ID },
  js = { name = 'js', cp = 'checkpoint', wp = 'checkpoint_write', cp_index = 'checkpoints',
    wp_index = 'checkpoint_writes', root = '', commas = false, pointers = false,
    blobs = { prefix = 'checkpoint_blob', index = 'checkpoint_blobs' } },
}

-- The one probe of the search module: `command` (FT.SEARCH or FT.AGGREGATE)
-- over index `name` with a query nothing matches and LIMIT 0 `limit`. Returns
-- true, or false and the error's text; it reads no document.
function Keys.probe(command, name, limit)
  local ok, err = pcall(rcall, command, name, '@thread_id:{lgprune} -@thread_id:{lgprune}',
    'LIMIT', '0', tostring(limit), 'DIALECT', '2')
  return ok, not ok and Core.error_text(err) or nil
end

-- Whether a search module error says the index does not exist.
function Keys.no_index(text)
  return text:find('no such index', 1, true) ~= nil or text:lower():find('unknown index', 1, true) ~= nil
end

-- Turn a search's failure over `index` into the error that says what to do
-- (NOINDEX, NOMODULE), or raise it as it is.
function Keys.search_failure(err, index)
  local text = Core.error_text(err)
  if Keys.no_index(text) then
    Core.fail('NOINDEX', 'index ' .. Core.show(index) .. ' does not exist: run the saver\'s setup() first '
      .. '(LangGraph.js: RedisSaver.fromUrl makes its indexes), or pass the prefixes the saver uses '
      .. '(CHECKPOINT_PREFIX, WRITE_PREFIX) or its LAYOUT')
  elseif Core.unknown_command(text) then
    Core.fail('NOMODULE', 'this server has no RediSearch module: lgprune needs Redis 8 or Redis Stack '
      .. '(search and JSON modules)')
  end
  error(err, 0)
end

-- Whether index `name` exists. A user the ACL keeps from it cannot tell:
-- MIXED, when unsure.
function Keys.index_exists(name)
  local ok, text = Keys.probe('FT.SEARCH', name, 0)
  if ok or Keys.no_index(text) then
    return ok
  elseif text:find('No permissions', 1, true) then
    Core.fail('MIXED', 'this user may not query index ' .. Core.show(name) .. ', so lgprune cannot tell whether both '
      .. 'savers index the same keys: grant it ~' .. name .. ' (see the README\'s ACL)')
  end
  return Keys.search_failure(text, name)
end

-- The layout of LAYOUT, or the one whose index exists; fails when both
-- savers' checkpoint indexes cover the keys <cp>:* (the python saver's with
-- the default prefix, and the js saver's): each index then holds both
-- savers' documents, and a subgraph key is spelt alike by both, so whose it
-- is cannot be told. Probed on every call: a saver may start at any time.
function Keys.layout_of(opts, cp)
  local name = opts.LAYOUT and string.lower(opts.LAYOUT)
  if name and not Keys.LAYOUTS[name] then
    Core.fail('BADARG', 'LAYOUT must be python or js, got ' .. Core.show(opts.LAYOUT))
  end
  if name == 'js' and (opts.CHECKPOINT_PREFIX or opts.WRITE_PREFIX) then
    Core.fail('BADARG', 'the js saver\'s prefixes are fixed: CHECKPOINT_PREFIX and WRITE_PREFIX are for LAYOUT python')
  end
  if cp ~= Keys.LAYOUTS.js.cp then
    return Keys.LAYOUTS[name or 'python'] -- keys the js saver never writes
  end
  local js = Keys.index_exists(Keys.LAYOUTS.js.cp_index)
  local python = (js or name == 'js') and Keys.index_exists(cp)
  if js and python then
    Core.fail('MIXED', 'both savers index the keys ' .. cp .. ':* (python: index "' .. cp .. '", LangGraph.js: "'
      .. Keys.LAYOUTS.js.cp_index .. '"), so whose a subgraph checkpoint is cannot be told; nothing was pruned. '
      .. 'Drop the other saver\'s index, without DD: FT.DROPINDEX ' .. cp .. ' if you use LangGraph.js, '
      .. 'FT.DROPINDEX ' .. Keys.LAYOUTS.js.cp_index .. ' if you use Python')
  end
  local other = (name == 'python' and js and 'js') or (name == 'js' and python and 'python')
  if other then
    Core.fail('NOINDEX', 'this store has only the ' .. other .. ' saver\'s index ('
      .. (js and Keys.LAYOUTS.js.cp_index or cp)
      .. '): pass LAYOUT ' .. other .. ' (or leave LAYOUT out)')
  end
  return Keys.LAYOUTS[name or (js and 'js' or 'python')]
end

-- Prefixes, index names and layout (defaulting to the saver's), the budget, dry run.
function Keys.context(opts)
  local cp = opts.CHECKPOINT_PREFIX or Keys.LAYOUTS.python.cp
  local wp = opts.WRITE_PREFIX or Keys.LAYOUTS.python.wp
  if cp == '' or wp == '' then
    Core.fail('BADARG', 'prefixes must not be empty')
  end
  local total = opts.BUDGET or Core.DEFAULT_BUDGET
  if total < MIN_BUDGET then
    Core.fail('BADARG', 'BUDGET must be at least ' .. MIN_BUDGET)
  end
  local layout = Keys.layout_of(opts, cp)
  local dry = opts.DRY_RUN == true
  -- `checked`: what one thread proved holds for the whole call
  return { cp = cp, wp = wp, cp_index = layout.cp_index or cp, wp_index = layout.wp_index or wp,
    layout = layout, root = layout.root, budget = Core.new_budget(total, dry), dry = dry, checked = {} }
end

-- True when s is well-formed UTF-8 (JSON documents cannot hold anything else).
function Keys.is_utf8(s)
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

-- The value RediSearch indexed for an id: TAG values are C strings (they end
-- at a NUL byte) and, with `commas` (see LAYOUTS), split on ',' and trimmed
-- of white space, so query the longest piece and confirm each hit.
function Keys.tag_of(thread_id, commas)
  if not commas then
    return thread_id:match('^[^%z]*')
  end
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
function Keys.tag_param(tag)
  if not tag:find('\\', 1, true) then
    return tag -- most ids: no copy made
  end
  return (tag:gsub('\\', '\\\\'))
end

-- The query parameter that finds a checkpoint's writes by its id, or nil
-- when RediSearch cannot match that id (`commas`: see tag_of).
function Keys.id_param(id, commas)
  local tag = Keys.tag_of(id, commas)
  if tag == '' or #id > Keys.MAX_TAG_BYTES then
    return nil
  end
  return Keys.tag_param(tag)
end

-- The thread a thread id names under `layout`, as a record: `id` as stored,
-- `tag` the query parameter that finds its TAG value, `plain` when that value
-- is the whole id (no NUL and, where tags split at commas, no comma or edge
-- white space): then no other thread's tag is its case-folded equal and
-- shorter, which key-form proofs rely on. Or nil and why it cannot be pruned.
function Keys.thread_record(thread_id, layout)
  if thread_id == nil then
    return nil, 'missing thread id'
  end
  if #thread_id > Keys.MAX_TAG_BYTES then
    return nil, 'thread id is ' .. #thread_id .. ' bytes; RediSearch cannot match TAG values over '
      .. Keys.MAX_TAG_BYTES .. ' bytes, so it cannot be pruned safely'
  end
  if not Keys.is_utf8(thread_id) then
    return nil, 'thread id is not valid UTF-8; the saver cannot have stored it'
  end
  local stored = thread_id
  if stored == '' then
    stored = layout.empty_id
    if not stored then
      return nil, 'LangGraph.js\'s saver stores no empty thread id'
    end
  end
  local tag = Keys.tag_of(stored, layout.commas)
  if tag == '' then
    return nil, 'thread id ' .. Core.show(thread_id) .. ' has nothing RediSearch indexes '
      .. '(only commas, white space or nothing before a NUL byte), so its checkpoints cannot be found'
  end
  return { id = stored, tag = Keys.tag_param(tag), plain = tag == stored }
end

-- thread_record, failing the call for an id that cannot be pruned.
function Keys.check_thread(thread_id, layout)
  local thread, why = Keys.thread_record(thread_id, layout)
  if not thread then
    Core.fail('BADARG', why)
  end
  return thread
end

-- Milliseconds since the Unix epoch in a uuid6 checkpoint id; nil for other ids.
function Keys.uuid6_ms(id)
  local high, mid, low = id:match('^(%x%x%x%x%x%x%x%x)%-(%x%x%x%x)%-6(%x%x%x)%-')
  if not high then
    return nil
  end
  local ticks = tonumber(high, 16) * 268435456 + tonumber(mid, 16) * 4096 + tonumber(low, 16)
  return (ticks - Keys.UUID_EPOCH) / 10000
end

-- True when `id` is a uuid6 older than `before` (ms): younger or undated
-- keys may belong to a checkpoint that is still being written.
function Keys.older(id, before)
  local ms = id and Keys.uuid6_ms(id)
  return ms ~= nil and ms < before
end

-- Whether s begins with prefix.
function Keys.starts_with(s, prefix)
  return s:find(prefix, 1, true) == 1 -- (no substring made: this runs per listed key)
end

-- <cp>:<thread>: the start of the keys of a thread's checkpoints.
function Keys.thread_prefix(ctx, thread)
  return ctx.cp .. ':' .. thread.id .. ':'
end

-- <cp>:<thread>:<ns>: the start of the keys of a namespace's checkpoints.
function Keys.checkpoint_prefix(ctx, thread, ns)
  return Keys.thread_prefix(ctx, thread) .. ns .. ':'
end

-- <cp>:<thread>:<ns>:<id>, a checkpoint.
function Keys.checkpoint_key(ctx, thread, ns, id)
  return Keys.checkpoint_prefix(ctx, thread, ns) .. id
end

-- <wp>:<thread>:<ns>:<id>: the start of every write key of a checkpoint.
function Keys.write_prefix(ctx, thread, d)
  return ctx.wp .. ':' .. thread.id .. ':' .. d.ns .. ':' .. d.id .. ':'
end

-- write_keys_zset:<thread>:<ns>:<id>, the saver's registry of a checkpoint's writes.
function Keys.registry_key(thread, d)
  return Keys.ZSET_PREFIX .. ':' .. thread.id .. ':' .. d.ns .. ':' .. d.id
end

-- <cp>_latest:, the start of every latest pointer (a sweep's SCAN looks for them).
function Keys.latest_start(ctx)
  return ctx.cp .. '_latest:'
end

-- <cp>_latest:<thread>:<ns>, the key of a namespace's newest checkpoint; nil
-- in a layout without latest pointers.
function Keys.latest_key(ctx, thread, ns)
  return ctx.layout.pointers and Keys.latest_start(ctx) .. thread.id .. ':' .. ns or nil
end

-- checkpoint_blob:<thread>:<ns>:<channel>:<version>, a channel value (js).
function Keys.blob_key(ctx, thread, ns, channel, version)
  return ctx.layout.blobs.prefix .. ':' .. thread.id .. ':' .. ns .. ':' .. channel .. ':' .. version
end

-- The checkpoint whose writes registry `key` (write_keys_zset:<stem>) lists,
-- and the start of those writes' keys: <cp>:<stem>, <wp>:<stem>: (the stem
-- <thread>:<ns>:<id> is not split: its parts hold colons).
function Keys.registry_owner(ctx, key)
  local stem = key:sub(#Keys.ZSET_PREFIX + 2)
  return ctx.cp .. ':' .. stem, ctx.wp .. ':' .. stem .. ':'
end

-- lgprune:dense:<fp>:<start>:<lo>, lgprune's own key (beside WATERMARKS): the
-- thread ids of the sweep pass's (fingerprint fp, begun at `start`) segment
-- from `lo` that holds more entries than one aggregate may read (all text);
-- with `lo` 'placed', where the pass's dense segments note their threads'
-- places (see Pass.placement).
function Keys.dense_key(fp, start, lo)
  return DENSE .. ':' .. fp .. ':' .. start .. ':' .. lo
end

-- The doc of a root checkpoint key: the key must be exactly <prefix><id>
-- (prefix = checkpoint_prefix(thread, ctx.root)) with a non-empty id free of
-- colons, a form no other thread's key can take when the key was found by a
-- query on the tag of a plain thread: another thread's extra ':'-separated
-- part would leave a colon in <id>, and a thread cut short at one of our
-- colons has a shorter (case-folded) tag, unlike ours when ours is the whole
-- id. (For a thread that is not plain, a comma lets another thread's namespace
-- spell our root: see proven_root.) Else nil. `root`: ctx.root.
function Keys.root_doc(key, prefix, root)
  if Keys.starts_with(key, prefix) and #key > #prefix and not key:find(':', #prefix + 1, true) then
    return { key = key, ns = root, id = key:sub(#prefix + 1) }
  end
  return nil
end

-- Search and reads --------------------------------------------------------------
-- The server's modules and caps, the one FT.SEARCH builder (query_args) and the searches that use it,
-- and the reads of stored values (JSON, the one reader of latest pointers). Every search runs
-- before the first delete of the thread it serves (see delete_doomed), so its failures delete
-- nothing.
-- Provides: capped, check_server, checkpoint_gone, count_tagged, get_string, identity, is_placeholder,
--   json_get, json_keyset, json_mget, latest_id, named, require_index, search, search_all, unless_wrongtype
-- Assumes: rcall, Core.BATCH, Core.Stale, Core.batches, Core.error_text, Core.fail, Core.unknown_command,
--   Keys.ROOT_NS, Keys.checkpoint_prefix, Keys.latest_key, Keys.probe, Keys.search_failure, Keys.starts_with
local Search = {}

Search.MAX_LIMIT = 1000000 -- RediSearch MAXSEARCHRESULTS default (redis-stack-server: 10000)
Search.MAX_GROUPS = 4000 -- the most groups one FT.AGGREGATE is asked for (a sweep's segment)

-- What earlier calls learnt of this server (the library's state lives until
-- it is loaded again): the JSON module answers; the search result cap; the
-- aggregate result cap (group_cap).
Search.server = { json = false, cap = nil, group_cap = nil }

-- FT.SEARCH arguments (the one place FT.SEARCH queries are built):
--   index   the index to search (ctx.cp_index, ctx.wp_index or the blobs')
--   where   the query text: $t is the thread's tag, $n the root namespace,
--           $c1..$cN the shape's `ids`
--   thread  the thread record whose tag $t holds (nil, given a shape: a query of no thread)
--   limit   entries wanted (0: only the count)
--   shape   optional record: `ids` (TAG parameters: checkpoint ids, see
--           id_param), `fields` (to RETURN; else NOCONTENT), `sorted`
--           (newest checkpoint_id first), `bounded` (DIALECT 4: RediSearch
--           stops at `limit` and the reply's total is not a count: only the
--           entries returned say anything), `offset` (entries skipped first)
-- Positional, and one table constructor for the common shape: a sweep makes
-- one query per thread it visits, and a record per query costs it measurably.
function Search.query_args(index, where, thread, limit, shape)
  local has_n = where:find('$n', 1, true) ~= nil -- a parameter more costs every query a little
  if not shape then
    if has_n then
      return { index, where, 'PARAMS', '4', 't', thread.tag, 'n', Keys.ROOT_NS, 'NOCONTENT',
        'LIMIT', '0', tostring(limit), 'TIMEOUT', '0', 'DIALECT', '2' }
    end
    return { index, where, 'PARAMS', '2', 't', thread.tag, 'NOCONTENT',
      'LIMIT', '0', tostring(limit), 'TIMEOUT', '0', 'DIALECT', '2' }
  end
  local ids = shape.ids or {}
  local params = (thread and 2 or 0) + (has_n and 2 or 0) + 2 * #ids
  local args, n = { index, where }, 2
  if params > 0 then
    args[3], args[4] = 'PARAMS', tostring(params)
    n = 4
  end
  if thread then
    args[n + 1], args[n + 2] = 't', thread.tag
    n = n + 2
  end
  if has_n then
    args[n + 1], args[n + 2] = 'n', Keys.ROOT_NS
    n = n + 2
  end
  for i, param in ipairs(ids) do
    args[n + 1], args[n + 2] = 'c' .. i, param
    n = n + 2
  end
  if shape.fields then
    args[n + 1], args[n + 2] = 'RETURN', tostring(#shape.fields)
    n = n + 2
    for _, field in ipairs(shape.fields) do
      n = n + 1
      args[n] = field
    end
  else
    n = n + 1
    args[n] = 'NOCONTENT'
  end
  if shape.sorted then
    args[n + 1], args[n + 2], args[n + 3] = 'SORTBY', 'checkpoint_id', 'DESC'
    n = n + 3
  end
  args[n + 1], args[n + 2], args[n + 3] = 'LIMIT', string.format('%d', shape.offset or 0), tostring(limit)
  args[n + 4], args[n + 5], args[n + 6], args[n + 7] = 'TIMEOUT', '0', 'DIALECT', shape.bounded and '4' or '2'
  return args
end

-- pcall(redis.call, ...) for a query whose LIMIT was sized by server[cap]
-- ('cap' or 'group_cap'): a cap lowered since it was learned is Stale (the
-- call runs again and learns it anew).
function Search.capped(cap, ...)
  local ok, res = pcall(rcall, ...)
  if not ok and Search.server[cap] and Core.error_text(res):find('exceeds maximum', 1, true) then -- (LIMIT, OFFSET)
    Search.server[cap] = nil
    error(Core.Stale, 0)
  end
  return ok, res
end

-- FT.SEARCH (arguments as query_args takes them), with the server's errors
-- turned into ones that say what to do (see capped).
function Search.search(index, where, thread, limit, shape)
  local ok, res = Search.capped('cap', 'FT.SEARCH', unpack(Search.query_args(index, where, thread, limit, shape)))
  if not ok then
    Keys.search_failure(res, index)
  end
  return res
end

-- A search that must return every entry up to `limit`: a short answer (a
-- search timeout returns partial results) stops the thread before any delete.
function Search.search_all(index, where, thread, limit, shape)
  local res = Search.search(index, where, thread, limit, shape)
  local returned = (#res - 1) / (shape and shape.fields and 2 or 1) -- a key, and its fields
  local expected = math.min(res[1], limit)
  if returned < expected then
    Core.fail('PARTIAL', 'the index returned ' .. returned .. ' of ' .. expected
      .. ' entries (a search timeout?); nothing was deleted, try again')
  end
  return res
end

-- An entry's RETURNed name/value list as a table (empty when RediSearch
-- returned no fields: a value it cannot return, such as one holding a NUL byte).
function Search.named(fields)
  local f = {}
  if type(fields) == 'table' then
    for j = 1, #fields, 2 do
      f[fields[j]] = fields[j + 1]
    end
  end
  return f
end

-- How many checkpoint index entries match `where`; by default those of the
-- thread's tag, a superset of the thread (the tag matches case-insensitively).
function Search.count_tagged(ctx, thread, where)
  return Search.search(ctx.cp_index, where or '@thread_id:{$t}', thread, 0)[1]
end

-- Fail (NOINDEX) unless the checkpoint index exists: a sweep that finds no
-- thread must mean there is none, not that it looked where nothing is.
function Search.require_index(ctx)
  local ok, text = Keys.probe('FT.SEARCH', ctx.cp_index, 0)
  if not ok then
    Keys.search_failure(text, ctx.cp_index)
  end
end

-- Fail unless the JSON module answers (probing a key under the checkpoint
-- prefix, which a least-privilege user may read).
function Search.require_json(ctx)
  local ok, err = pcall(rcall, 'JSON.TYPE', ctx.cp .. ':{lgprune}:probe')
  if not ok then
    if Core.unknown_command(Core.error_text(err)) then
      Core.fail('NOMODULE', 'this server has no RedisJSON module: lgprune needs Redis 8 or Redis Stack '
        .. '(search and JSON modules)')
    end
    error(err, 0)
  end
end

-- The most entries one `command` (FT.SEARCH: RediSearch's MAXSEARCHRESULTS;
-- FT.AGGREGATE: MAXAGGREGATERESULTS) may return here, up to `most`. Asking
-- an empty query for `most` entries either works or fails naming the cap, so
-- no right beyond the command is needed. Any other failure is left to the
-- real queries.
function Search.limit_cap(ctx, command, most)
  local ok, text = Keys.probe(command, ctx.cp_index, most)
  local cap = not ok and tonumber(text:match('LIMIT exceeds maximum of (%d+)'))
  return cap and math.max(cap, 1) or most
end

-- The server checks every entry point makes before it plans: the JSON
-- module answers, ctx.cap holds the search result cap and ctx.group_cap the
-- aggregate's (MAXAGGREGATERESULTS, up to MAX_GROUPS). All are probed once per
-- library load (modules do not unload; a changed cap is caught by `capped`).
function Search.check_server(ctx)
  if not Search.server.json then
    Search.require_json(ctx)
    Search.server.json = true
  end
  Search.server.cap = Search.server.cap or Search.limit_cap(ctx, 'FT.SEARCH', Search.MAX_LIMIT)
  Search.server.group_cap = Search.server.group_cap or Search.limit_cap(ctx, 'FT.AGGREGATE', Search.MAX_GROUPS)
  ctx.cap, ctx.group_cap = Search.server.cap, Search.server.group_cap
end

-- JSON.GET of one path, decoded; nil when the key or path is missing.
function Search.json_get(key, path)
  local raw = rcall('JSON.GET', key, path)
  if not raw then
    return nil
  end
  return cjson.decode(raw)[1]
end

-- The keys of the object at `path` of a JSON document, as a set.
function Search.json_keyset(key, path)
  local set = {}
  local res = rcall('JSON.OBJKEYS', key, path)
  if type(res) == 'table' and type(res[1]) == 'table' then
    for _, k in ipairs(res[1]) do
      set[k] = true
    end
  end
  return set
end

-- The value at `path` of each of `keys`, decoded, indexed like keys (nil for
-- a missing key or path, or a key that is not JSON): JSON.MGET in batches.
function Search.json_mget(keys, path)
  local values = {}
  for first, last in Core.batches(#keys, Core.BATCH) do
    local args = {}
    for i = first, last do
      args[i - first + 1] = keys[i]
    end
    args[last - first + 2] = path
    local res = rcall('JSON.MGET', unpack(args))
    for i = first, last do
      local raw = res[i - first + 1]
      values[i] = type(raw) == 'string' and cjson.decode(raw)[1] or nil
    end
  end
  return values
end

-- pcall's answer to a read of a key that may hold another type than the saver
-- writes there: the value, or nil for WRONGTYPE (not the saver's key). Any
-- other error (the ACL refused the read) is raised: never read as absent.
function Search.unless_wrongtype(ok, res)
  if ok then
    return res
  end
  if Core.error_text(res):find('WRONGTYPE', 1, true) then
    return nil
  end
  error(res, 0)
end

-- A document's own thread_id, checkpoint_ns and checkpoint_id (each a string
-- or nil) and checkpoint_ts (a number or nil); all nil for a missing key or
-- one that is not JSON.
function Search.identity(key)
  local raw = Search.unless_wrongtype(pcall(rcall, 'JSON.GET', key, '$.thread_id', '$.checkpoint_ns',
    '$.checkpoint_id', '$.checkpoint_ts'))
  local decoded, f = false, nil
  if type(raw) == 'string' then
    decoded, f = pcall(cjson.decode, raw)
  end
  if not decoded or type(f) ~= 'table' then
    return nil, nil, nil, nil
  end
  local function field(path, kind)
    local v = type(f[path]) == 'table' and f[path][1]
    return type(v) == kind and v or nil
  end
  return field('$.thread_id', 'string'), field('$.checkpoint_ns', 'string'), field('$.checkpoint_id', 'string'),
    field('$.checkpoint_ts', 'number')
end

-- Whether `key` holds a placeholder: the document the saver's put_writes makes
-- (a JSON.MERGE of {"has_writes": true}) for a checkpoint not stored yet. It
-- names no thread and no checkpoint, so no index query finds it.
function Search.is_placeholder(key)
  local has = Search.unless_wrongtype(pcall(Search.json_keyset, key, '$')) -- (a key that is not JSON is none)
  return has ~= nil and has.has_writes == true and not has.checkpoint_id and not has.thread_id
end

-- Whether checkpoint `key` is gone for its writes: missing, or a placeholder.
function Search.checkpoint_gone(key)
  return rcall('EXISTS', key) == 0 or Search.is_placeholder(key)
end

-- The string at `key`, nil when it is missing or holds another type (not the saver's).
function Search.get_string(key)
  return Search.unless_wrongtype(pcall(rcall, 'GET', key)) or nil
end

-- The one reader of latest pointers: the id of the checkpoint that namespace
-- `ns`'s pointer names, when it names one under the namespace's own key
-- prefix; nil when it names none (or the layout has no pointers).
function Search.latest_id(ctx, thread, ns)
  local pointer = Keys.latest_key(ctx, thread, ns)
  local key = pointer and Search.get_string(pointer)
  local prefix = key and Keys.checkpoint_prefix(ctx, thread, ns)
  if prefix and #key > #prefix and Keys.starts_with(key, prefix) then
    return key:sub(#prefix + 1)
  end
  return nil
end

-- Listing -----------------------------------------------------------------------
-- A thread's first look, and its checkpoints as docs { key, ns, id } under a view: the whole
-- thread, or for one too large to list whole the root's oldest stored and its newest (by a window
-- anchored at the latest pointer, else sorted), and the other namespaces' newest.
-- Lists read only; what is listed is proved to be the thread's: root keys by their form (root_doc),
-- others by their own fields.
-- Provides: first_look, list_checkpoints, marks_delta, newest_root, registered_writes
-- Assumes: rcall, Keys.ROOT_NS, Keys.checkpoint_key, Keys.checkpoint_prefix, Keys.registry_key,
--   Keys.root_doc, Keys.starts_with, Keys.thread_prefix, Keys.uuid6_ms, Search.count_tagged, Search.identity,
--   Search.latest_id, Search.named, Search.search, Search.search_all
local Listing = {}

Listing.WINDOW_START_MS = 1000 -- first span of the root window, widened x4
Listing.CLOCK_SLACK_MS = 1000 -- how far ids and checkpoint_ts may disagree
Listing.DELTA_MARKER = 'counters_since_delta_snapshot' -- in the metadata of a DeltaChannel checkpoint
Listing.ROOT_WHERE = '@thread_id:{$t} @checkpoint_ns:{$n}'
Listing.OTHERS_WHERE = '@thread_id:{$t} -@checkpoint_ns:{$n}'
Listing.SHAPES = { -- the listing's query shapes (see query_args)
  sorted = { sorted = true },
  identity = { fields = { 'thread_id', 'checkpoint_id' } },
  sorted_identity = { fields = { 'thread_id', 'checkpoint_id' }, sorted = true },
  bounded = { bounded = true },
}

-- Whether checkpoint metadata (a JSON string) names DeltaChannel counters.
function Listing.marks_delta(meta)
  return type(meta) == 'string' and meta:find(Listing.DELTA_MARKER, 1, true) ~= nil
end

-- How many writes the saver registered for checkpoint d.
function Listing.registered_writes(thread, d)
  return rcall('ZCARD', Keys.registry_key(thread, d))
end

-- The doc of root checkpoint `key` of the thread, or nil: root_doc's form and,
-- for a thread that is not plain or when `always`, the document's own
-- thread_id, checkpoint_ns and checkpoint_id (thread `a,x` may store namespace
-- `__empty__,r:__empty__`, whose keys are those of the root of thread
-- `a,x:__empty__,r`, and which the TAG query on the root namespace matches by
-- its piece `__empty__`); a doc so confirmed carries its checkpoint_ts (`ts`,
-- nil when that is no number). `prefix` is checkpoint_prefix(ctx, thread,
-- ctx.root), built once by the caller.
function Listing.proven_root(ctx, thread, key, prefix, always)
  local d = Keys.root_doc(key, prefix, ctx.root)
  if d and (always or not thread.plain) then
    local t, ns, id, ts = Search.identity(key)
    if t ~= thread.id or ns ~= Keys.ROOT_NS or id ~= d.id then
      return nil
    end
    d.ts = ts
  end
  return d
end

-- The thread's newest root checkpoint, as its latest pointer names it, always
-- confirmed by its document (see proven_root), so that a dangling pointer or
-- a placeholder names none; nil when none (or the layout has no pointers).
-- The one read of what a pointer names: it anchors the root window and
-- places a thread in a pass.
function Listing.newest_root(ctx, thread)
  local id = Search.latest_id(ctx, thread, ctx.root)
  local prefix = Keys.checkpoint_prefix(ctx, thread, ctx.root)
  return id and Listing.proven_root(ctx, thread, prefix .. id, prefix, true) or nil
end

-- The first look at a thread: how many entries carry its tag and, for a
-- plain thread of at most `limit`, the answer of the query on the tag alone,
-- which is then also its listing. That query stops at `limit` + 1 entries
-- (`bounded`), so a larger thread is not walked whole by it: only then is
-- it counted.
function Listing.first_look(ctx, thread, limit)
  if not thread.plain then
    return Search.count_tagged(ctx, thread), nil
  end
  local ask = math.min(limit + 1, ctx.cap)
  local res = Search.search(ctx.cp_index, '@thread_id:{$t}', thread, ask, Listing.SHAPES.bounded)
  res[1] = #res - 1 -- a bounded answer's total is no count
  if res[1] < ask then
    return res[1], res -- every tagged entry
  end
  return Search.count_tagged(ctx, thread), nil -- (not the root's page: see list_root)
end

-- Root docs of the thread, collected once each: put(d) keeps doc d, proven
-- already; add(keys, first, last) the keys[first..last] of an index answer
-- that proven_root proves.
function Listing.root_docs(ctx, thread)
  local self, listed, prefix = { docs = {} }, {}, Keys.checkpoint_prefix(ctx, thread, ctx.root)
  function self.put(d)
    if d and not listed[d.key] then
      listed[d.key] = true
      self.docs[#self.docs + 1] = d
    end
  end
  function self.add(keys, first, last)
    for i = first, math.min(#keys, last) do
      self.put(not listed[keys[i]] and Listing.proven_root(ctx, thread, keys[i], prefix))
    end
  end
  return self
end

-- The thread's root entries with checkpoint_ts at or after `lo` (ms), up to
-- `limit` (0: the count). The time range comes first: RediSearch then walks
-- only the window's entries.
function Listing.since(ctx, thread, lo, limit)
  local where = string.format('@checkpoint_ts:[%.3f +inf] ', lo) .. Listing.ROOT_WHERE
  return Search.search(ctx.cp_index, where, thread, limit)
end

-- How far back from `ts` the root window reaches (ms): widened until it holds
-- more than `keep` (or reaches the epoch), then narrowed while it holds more
-- than `target`.
function Listing.window_span(ctx, thread, ts, keep, target)
  local short, span = 0, Listing.WINDOW_START_MS
  local count = Listing.since(ctx, thread, ts - span, 0)[1]
  while count <= keep and span < ts do
    short, span = span, span * 4
    count = Listing.since(ctx, thread, ts - span, 0)[1]
  end
  for _ = 1, 12 do
    if count <= target or span - short < 1 then
      break
    end
    local middle = (short + span) / 2
    local inside = Listing.since(ctx, thread, ts - middle, 0)[1]
    if inside > keep then
      span, count = middle, inside
    else
      short = middle
    end
  end
  return span
end

-- Whether the keep-th newest of `docs` was made after `lo` (ms, with clock
-- slack): then a window from `lo`, listed whole, holds the true newest `keep`.
function Listing.kth_after(docs, keep, lo)
  local ids = {}
  for _, d in ipairs(docs) do
    ids[#ids + 1] = d.id
  end
  table.sort(ids, function(a, b) return a > b end)
  local ms = ids[keep] and Keys.uuid6_ms(ids[keep])
  return ms ~= nil and ms >= lo + Listing.CLOCK_SLACK_MS
end

-- Where a window of the root's newest by checkpoint_ts begins (ms): from the
-- checkpoint_ts of the one the latest pointer names (view.newest), back far
-- enough to hold more than `keep` and at most view.limit (see window_span);
-- nil when no pointer anchors one.
function Listing.window_start(ctx, thread, view, keep)
  local ts = view.newest and view.newest.ts
  return ts and ts - Listing.window_span(ctx, thread, ts, keep, view.limit)
end

-- The root checkpoints under `view`, and whether the newest `keep` listed are
-- surely the true newest (`exact`, which DeltaChannel history and IDLE_TTL
-- need). A root larger than view.limit lists its newest, with the one the
-- latest pointer names (whose history a plan walks, however old its id): any
-- listed checkpoint with `keep` newer ones listed beside it is provably not
-- among the newest `keep`, whatever was left out (the plan keeps the newest
-- `keep` listed: they are the witnesses). They come from a window from
-- window_start, without sorting, when `keep` is given and a pointer anchors
-- one: exact when the window was listed whole and began before the keep-th
-- newest listed id was made (the saver stamps checkpoint_ts after making the
-- id, on the same clock); else the newest view.limit by checkpoint_id,
-- sorted (exact). Every root lists its first view.page in the order the
-- index stored them: the whole root when the thread fits (view.first, the
-- first look's answer, for a plain thread), else its oldest stored, which is
-- what goes (by a query on the root alone: the first look's answer may begin
-- with other namespaces' or a case variant's entries, which would leave the
-- oldest roots unlisted call after call).
function Listing.list_root(ctx, thread, view, keep)
  local list, exact = Listing.root_docs(ctx, thread), true
  if view.sorted then
    list.put(view.newest)
    local lo = keep and Listing.window_start(ctx, thread, view, keep)
    local newest = lo and Listing.since(ctx, thread, lo, view.limit)
      or Search.search_all(ctx.cp_index, Listing.ROOT_WHERE, thread, view.limit, Listing.SHAPES.sorted)
    list.add(newest, 2, view.limit + 1)
    exact = not lo or (newest[1] <= #newest - 1 and Listing.kth_after(list.docs, keep, lo))
  end
  local first = view.first or Search.search_all(ctx.cp_index, Listing.ROOT_WHERE, thread, view.page)
  list.add(first, 2, view.page + 1)
  return list.docs, exact
end

-- The doc of an entry outside the root namespace when it is the thread's:
-- its own thread_id and checkpoint_id, and the key the saver builds from
-- them, agree byte for byte. `fields`: the entry's RETURNed name/value list.
function Listing.other_doc(ctx, thread, key, fields)
  local f = Search.named(fields)
  local id, prefix = f.checkpoint_id, Keys.thread_prefix(ctx, thread)
  if f.thread_id ~= thread.id or not id or id == '' or #key <= #prefix + #id + 1
    or not Keys.starts_with(key, prefix) or key:sub(-#id - 1) ~= ':' .. id then
    return nil
  end
  local ns = key:sub(#prefix + 1, #key - #id - 1)
  if ns ~= ctx.root and key == Keys.checkpoint_key(ctx, thread, ns, id) then
    return { key = key, ns = ns, id = id }
  end
  return nil
end

-- The thread's checkpoints outside the root namespace (see other_doc): all
-- of them when the thread is listed whole (none when its `roots` root
-- checkpoints are every tagged entry), else the newest view.limit.
function Listing.list_others(ctx, thread, view, roots)
  if not view.sorted and roots >= view.tagged then
    return {} -- every tagged entry is one of its root checkpoints
  end
  if view.sorted and Search.count_tagged(ctx, thread, Listing.OTHERS_WHERE) == 0 then
    return {} -- no entry of the thread's tag outside the root
  end
  local res = Search.search_all(ctx.cp_index, Listing.OTHERS_WHERE, thread, view.limit,
    view.sorted and Listing.SHAPES.sorted_identity or Listing.SHAPES.identity)
  local docs = {}
  for i = 2, #res, 2 do
    docs[#docs + 1] = Listing.other_doc(ctx, thread, res[i], res[i + 1])
  end
  return docs
end

-- The thread's checkpoints, as {key, ns, id}, under a view record:
--   limit   how many entries each listing may return;
--   sorted  false: the thread fits `limit` and is listed whole; true: the
--           newest `limit` of the namespaces other than the root and the
--           root's oldest stored and newest (see list_root: by a window
--           when `rule` is given);
--   tagged  the number of entries tagged with the thread's id;
--   first   for a plain thread listed whole, the answer of the query on its
--           tag alone (every tagged entry);
--   page    how many of the root's first stored it lists (all when not sorted);
--   newest  the newest root checkpoint (newest_root), which anchors the window;
--   others  the namespaces other than the root (list_others), once listed: a
--           listing again (with another page or without the window) lists
--           the root only.
-- Also returns whether the root's newest `keep` are surely listed (false
-- only for a window that cannot prove it).
function Listing.list_checkpoints(ctx, thread, view, rule)
  local docs, exact = Listing.list_root(ctx, thread, view, rule and math.max(rule.keep, 1))
  view.others = view.others or Listing.list_others(ctx, thread, view, #docs)
  for _, d in ipairs(view.others) do
    docs[#docs + 1] = d
  end
  return docs, exact
end

-- Planning ----------------------------------------------------------------------
-- What goes of a thread's listed checkpoints under a rule: per namespace the newest `keep` stay
-- (the rule's age limits aside), old subgraph runs go whole, the latest pointer's checkpoint stays,
-- with its history, while its namespace keeps any, and DeltaChannel history of a kept checkpoint
-- stays. Reads only; a DeltaChannel walk longer than what the budget leaves fails the thread.
-- Provides: plan
-- Assumes: Core.fail, Core.now_ms, Core.reads_left, Core.show, Keys.DEFAULT_GRACE_MS, Keys.checkpoint_key,
--   Keys.uuid6_ms, Listing.marks_delta, Search.checkpoint_gone, Search.json_get, Search.json_keyset,
--   Search.json_mget, Search.latest_id
local Plan = {}

-- Delta channels a checkpoint rebuilds from its ancestors: those with a
-- counters_since_delta_snapshot entry and a version, but no stored value.
-- `meta` is the checkpoint's metadata string.
function Plan.delta_channels(key, meta)
  if not Listing.marks_delta(meta) then
    return nil
  end
  local ok, decoded = pcall(cjson.decode, meta)
  if not ok or type(decoded) ~= 'table' then
    Core.fail('BADDATA', 'checkpoint ' .. Core.show(key) .. ' has unreadable metadata; nothing was deleted')
  end
  local counters = decoded.counters_since_delta_snapshot
  if type(counters) ~= 'table' then
    return nil
  end
  local versions = Search.json_keyset(key, '$.checkpoint.channel_versions')
  local values = Search.json_keyset(key, '$.checkpoint.channel_values')
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
function Plan.subset(a, b)
  for k in pairs(a) do
    if not b[k] then
      return false
    end
  end
  return true
end

-- Walk the parent chain of kept checkpoint `start` under a walk record
-- { ctx, thread, ns, budget, protect, seen }, marking in `protect` (by id)
-- every ancestor up to the nearest one storing all `needed` channels, as
-- get_delta_channel_history would read them; `seen` memoises walks per id.
-- Returns true when the chain stops at a parent not stored yet: a saver
-- writing now may store it later, after its own ancestors, so nothing older
-- can be judged. A walk longer than reads_left(budget) fails the thread.
function Plan.walk_delta(walk, start, needed)
  local steps, limit, key = 0, Core.reads_left(walk.budget), start
  while true do
    local parent = Search.json_get(key, '$.parent_checkpoint_id')
    if type(parent) ~= 'string' or parent == '' then
      return false
    end
    local pkey = Keys.checkpoint_key(walk.ctx, walk.thread, walk.ns, parent)
    if Search.checkpoint_gone(pkey) then -- missing, or a placeholder: not stored yet
      local ms = Keys.uuid6_ms(parent)
      return ms == nil or ms >= Core.now_ms() - Keys.DEFAULT_GRACE_MS
    end
    local before = walk.seen[parent]
    if before and Plan.subset(needed, before) then
      return false
    end
    steps = steps + 1
    if steps > limit then
      Core.fail('BADARG', 'the DeltaChannel history of ' .. Core.show(start) .. ' is longer than '
        .. limit .. ' checkpoints; raise BUDGET to prune this thread')
    end
    walk.seen[parent] = before or {}
    for ch in pairs(needed) do
      walk.seen[parent][ch] = true
    end
    walk.protect[parent] = true
    for ch in pairs(Search.json_keyset(pkey, '$.checkpoint.channel_values')) do
      needed[ch] = nil
    end
    if next(needed) == nil then
      return false
    end
    key = pkey
  end
end

-- How many of a namespace's ids (sorted ascending) go: all but the newest
-- `keep`, and with `old_before` only those whose uuid6 time is older.
function Plan.cut(ids, keep, old_before)
  local last = #ids - keep
  if old_before then
    local m = 0
    while m < last do
      local ms = Keys.uuid6_ms(ids[m + 1])
      if not ms or ms >= old_before then
        break
      end
      m = m + 1
    end
    last = m
  end
  return last
end

-- The docs by namespace: groups[ns] = { ids (ascending, plain string order,
-- as uuid6 sorts), doc (by id) }, the namespaces in listing order, and the
-- newest id of all.
function Plan.by_namespace(docs)
  local groups, names, newest = {}, {}, nil
  for _, d in ipairs(docs) do
    local g = groups[d.ns]
    if not g then
      g = { ids = {}, doc = {} }
      groups[d.ns] = g
      names[#names + 1] = d.ns
    end
    g.ids[#g.ids + 1] = d.id
    g.doc[d.id] = d
    if not newest or d.id > newest then
      newest = d.id
    end
  end
  for _, ns in ipairs(names) do
    table.sort(groups[ns].ids)
  end
  return groups, names, newest
end

-- The DeltaChannel history the kept checkpoints of group g rebuild from
-- (ids[last+1..], and `spared`, an older id kept all the same): the ids to
-- protect, and whether to hold the whole namespace (see walk_delta). Sets
-- p.delta when a kept checkpoint uses DeltaChannel.
function Plan.delta_history(p, ns, g, last, spared)
  local walk = { ctx = p.ctx, thread = p.thread, ns = ns, budget = p.budget, protect = {}, seen = {} }
  local kept = {}
  for i = last + 1, #g.ids do
    kept[#kept + 1] = g.doc[g.ids[i]].key
  end
  if spared then
    kept[#kept + 1] = g.doc[spared].key
  end
  local metas = Search.json_mget(kept, '$.metadata')
  local hold = false
  for i = #kept, 1, -1 do
    local needed = Plan.delta_channels(kept[i], metas[i])
    if needed then
      p.delta = true
      hold = Plan.walk_delta(walk, kept[i], needed) or hold
    end
  end
  return walk.protect, hold
end

-- How many of group g's ids (ascending) go under plan p: ids[1..last] (see
-- cut), or all of a subgraph run older than `oldest_root`; and the id its
-- latest pointer names when that is among them and the namespace keeps any
-- (it stays, as a kept checkpoint: the saver reads the namespace from it).
function Plan.doomed_range(p, ns, g, oldest_root)
  local ids, n = g.ids, #g.ids
  local last = Plan.cut(ids, p.keep, p.old_before)
  if ns ~= p.ctx.root and oldest_root and ids[n] < oldest_root then
    last = n -- a subgraph run older than every kept root checkpoint
  end
  local latest = nil
  if last >= 1 and last < n then
    if p.latest[ns] == nil then
      p.latest[ns] = Search.latest_id(p.ctx, p.thread, ns) or false
    end
    latest = p.latest[ns] or nil
  end
  if latest and not (g.doc[latest] and latest < ids[last + 1]) then
    latest = nil -- not among the doomed
  end
  return last, latest
end

-- Plan namespace `ns` (group g) into p: what doomed_range dooms, less the
-- protected history and the pointer's checkpoint. When every checkpoint of a
-- namespace listed whole goes, its newest takes the latest pointer with it
-- (p.pointers[key]): a namespace left with any checkpoint keeps its pointer.
function Plan.plan_namespace(p, ns, g, oldest_root)
  local ids = g.ids
  local last, latest = Plan.doomed_range(p, ns, g, oldest_root)
  if last < 1 then
    return
  end
  local protect, hold = Plan.delta_history(p, ns, g, last, latest)
  for i = 1, hold and 0 or last do
    if protect[ids[i]] then
      p.spared = p.spared + 1
    elseif ids[i] ~= latest then
      local d = g.doc[ids[i]]
      p.pointers[d.key] = p.whole and i == #ids or nil
      p.doomed[#p.doomed + 1] = d
    end
  end
end

-- The oldest root checkpoint plan p keeps (nil when it keeps none): the
-- checkpoint the root's pointer spares counts. Listed in part, the root holds
-- more than `keep` (a root window is widened until it does, or lists the
-- whole root), so the true newest `keep` are no older than the listed ones.
function Plan.oldest_kept_root(p, root)
  if not root then
    return nil
  end
  local _, latest = Plan.doomed_range(p, p.ctx.root, root, nil)
  return latest or root.ids[Plan.cut(root.ids, p.keep, p.old_before) + 1]
end

-- Decide, from the thread's listed checkpoints, which ones go under `rule`
-- (see policy); `whole`: the thread was listed whole. Returns the plan:
-- `doomed`, the docs that go, oldest first within each namespace, the newest
-- of a namespace that goes whole in `pointers` (by key); `spared`, the number of
-- delta ancestors kept; `idle`, whether the thread was idle; `delta`, whether
-- a kept checkpoint rebuilds delta channels from its ancestors; `roots`, how
-- many root checkpoints were listed.
function Plan.plan(ctx, thread, docs, rule, whole)
  local groups, names, newest = Plan.by_namespace(docs)
  local p = { ctx = ctx, thread = thread, budget = ctx.budget, keep = rule.keep, whole = whole,
    old_before = rule.old_before, doomed = {}, pointers = {}, spared = 0, idle = false, delta = false, latest = {},
    roots = groups[ctx.root] and #groups[ctx.root].ids or 0 }
  local ms = rule.idle_before and newest and Keys.uuid6_ms(newest)
  if ms and ms < rule.idle_before then
    p.keep, p.old_before, p.idle = 0, nil, true
  end
  local oldest_root = Plan.oldest_kept_root(p, groups[ctx.root])
  for _, ns in ipairs(names) do
    Plan.plan_namespace(p, ns, groups[ns], oldest_root)
  end
  return p
end

-- Blobs (LangGraph.js) --------------------------------------------------------------
-- The channel-value blobs of a thread that no checkpoint left by a plan references. Reads only
-- (before the thread's first delete).
-- Provides: freed_blobs
-- Assumes: Core.now_ms, Core.reads_left, Keys.DEFAULT_GRACE_MS, Keys.ROOT_NS, Keys.blob_key, Keys.older,
--   Search.json_mget, Search.named, Search.search
local Blobs = {}

-- A channel version as the js saver spells it in a blob key (`${version}`):
-- a string as it is, a whole number below 2^53 in decimal; nil for any other
-- number (its JavaScript spelling is not certain here).
function Blobs.version_text(v)
  if type(v) == 'string' then
    return v
  end
  if type(v) == 'number' and v == math.floor(v) and math.abs(v) < 2 ^ 53 then -- (JavaScript's exact integers)
    return string.format('%d', v)
  end
  return nil
end

-- The blob keys that the checkpoints `kept` read back (every channel of their
-- channel_versions, stored inline or not), and the namespaces where one of
-- them cannot be read or spelt: all their blobs stay.
function Blobs.blob_refs(ctx, thread, kept)
  local keys = {}
  for i, d in ipairs(kept) do
    keys[i] = d.key
  end
  local versions = Search.json_mget(keys, '$.checkpoint.channel_versions')
  local refs, unsure = {}, {}
  for i, d in ipairs(kept) do
    if type(versions[i]) ~= 'table' then
      unsure[d.ns] = true
    else
      for channel, version in pairs(versions[i]) do
        local text = Blobs.version_text(version)
        if text then
          refs[Keys.blob_key(ctx, thread, d.ns, channel, text)] = true
        else
          unsure[d.ns] = true
        end
      end
    end
  end
  return refs, unsure
end

-- The blobs of a thread listed whole (`docs`) that plan p frees: found
-- through the blobs index, each confirmed by its own fields to be the key the
-- saver reads for its thread, namespace, channel and version; it goes when
-- no checkpoint left (docs less p.doomed) references it, and the checkpoint
-- that wrote it is not one being stored now (the saver stores blobs before
-- their checkpoint, which is newer than any): one listed or older (its id at
-- most the namespace's newest listed), or one older than DEFAULT_GRACE_MS.
-- Reads up to 2 * reads_left entries (as the writes do; a case variant's
-- blobs are among them). Returns { keys, cut }: cut when entries were left
-- unread.
function Blobs.freed_blobs(ctx, thread, docs, p)
  local doomed, kept, newest = {}, {}, {}
  for _, d in ipairs(p.doomed) do
    doomed[d.key] = true
  end
  for _, d in ipairs(docs) do
    if not doomed[d.key] then
      kept[#kept + 1] = d
    end
    if not newest[d.ns] or d.id > newest[d.ns] then
      newest[d.ns] = d.id
    end
  end
  local refs, unsure = Blobs.blob_refs(ctx, thread, kept)
  local res = Search.search(ctx.layout.blobs.index, '@thread_id:{$t}', thread,
    math.min(2 * Core.reads_left(ctx.budget), ctx.cap),
    { fields = { 'thread_id', 'checkpoint_ns', 'checkpoint_id', 'channel', 'version' } })
  local before, keys = Core.now_ms() - Keys.DEFAULT_GRACE_MS, {}
  for i = 2, #res, 2 do
    local key, f = res[i], Search.named(res[i + 1])
    local ns = f.checkpoint_ns == Keys.ROOT_NS and ctx.root or f.checkpoint_ns
    local writer = f.checkpoint_id
    if f.thread_id == thread.id and ns and not unsure[ns] and f.channel and f.version and writer
      and key == Keys.blob_key(ctx, thread, ns, f.channel, f.version) and not refs[key]
      and ((newest[ns] and writer <= newest[ns]) or Keys.older(writer, before)) then
      keys[#keys + 1] = key
    end
  end
  return { keys = keys, cut = res[1] > (#res - 1) / 2 }
end

-- Deleting ----------------------------------------------------------------------
-- A plan's checkpoints deleted with their writes, registries and latest pointers, and its leftovers
-- and blobs, within the budget, once the ACL lets them all go. Every key found is confirmed
-- (`owns`); every search and read of a thread runs before its first delete: keys are collected in
-- sinks and flushed at the end.
-- Provides: check_allowed, check_write_prefix, delete_doomed, leftovers, sink, stranded_write
-- Assumes: rcall, Core.BATCH, Core.batches, Core.fail, Core.keys_left, Core.reads_left, Core.show,
--   Keys.checkpoint_key, Keys.id_param, Keys.latest_key, Keys.older, Keys.registry_key, Keys.starts_with,
--   Keys.write_prefix, Listing.registered_writes, Search.checkpoint_gone, Search.identity, Search.search
local Delete = {}

Delete.WRITES_CHUNK = 64 -- checkpoint ids per writes query
Delete.ACL_USE = { UNLINK = 'delete', HSET = 'write to', HGET = 'read', -- (see check_allowed)
  ZADD = 'collect the threads of a dense millisecond in', EXPIRE = 'set the expiry of' }

-- Whether write key `key`, found by a writes query on the thread's tag and
-- starting with d's write prefix `<wp>:<thread>:<ns>:<id>:` (`prefix_len`
-- bytes), belongs to doomed checkpoint `d` of `thread` (`plain`: see write_owners).
--
-- The saver makes every write key `<wp>:<thread>:<ns>:<id>:<task>:<idx>` with
-- an integer idx, but any part may hold colons, so the key is proof only when
-- d is plain and the rest is `<task>:<idx>` with a
-- colon-free task. Then the true owner's prefix cannot be longer (it would
-- take the one colon its own task and idx need), nor shorter: ending at a
-- colon inside d's prefix, it would leave our thread's ns and id, which have
-- none, too few colons, or belong to a thread cut short at one of our
-- thread's colons, whose tag cannot match ours (no commas or NUL in ours, and
-- a case-folded prefix is shorter). Otherwise the key counts when the saver
-- listed it in d's registry zset, or the write's own fields name d exactly.
function Delete.owns(thread, d, key, prefix_len, plain)
  if plain and key:find('^[^:]*:%-?%d+$', prefix_len + 1) then
    return true
  end
  if rcall('ZSCORE', Keys.registry_key(thread, d), key) then
    return true
  end
  local t, ns, id = Search.identity(key)
  return t == thread.id and ns == d.ns and id == d.id
end

-- The doomed checkpoints by the start of their write keys: `prefix` maps
-- write_prefix(d) to d, `lengths` lists the lengths those prefixes have
-- (usually one: root namespace, uuid ids), `plain[d]` whether d's write keys
-- can prove their owner by their form (see owns).
function Delete.write_owners(ctx, thread, doomed)
  local owners, seen = { prefix = {}, lengths = {}, plain = {} }, {}
  for _, d in ipairs(doomed) do
    local prefix = Keys.write_prefix(ctx, thread, d)
    owners.prefix[prefix] = d
    owners.plain[d] = thread.plain and not d.ns:find(':', 1, true) and not d.id:find(':', 1, true)
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
-- found[d.id] lists d's keys.
function Delete.match_writes(res, thread, owners, found)
  local lengths, prefix = owners.lengths, owners.prefix -- locals: this runs once per write
  for i = 2, #res do
    local key = res[i]
    for j = 1, #lengths do
      local len = lengths[j]
      local d = key:byte(len) == 58 and prefix[key:sub(1, len)] -- 58: ':'
      if d and Delete.owns(thread, d, key, len, owners.plain[d]) then
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

-- Collects keys to delete; flush() deletes them in batches (or, in a dry run,
-- counts those that exist), charging the budget. Nothing is deleted before
-- flush(), so every search of a thread runs before its first delete.
function Delete.sink(b)
  local self = { pending = {}, deleted = 0 }
  function self.flush()
    local p = self.pending
    for first, last in Core.batches(#p, Core.BATCH) do
      if b.dry then
        self.deleted = self.deleted + rcall('EXISTS', unpack(p, first, last))
      else
        local n = rcall('UNLINK', unpack(p, first, last))
        self.deleted = self.deleted + n
        b.keys = b.keys + n
      end
    end
    self.pending = {}
  end
  function self.add(key)
    self.pending[#self.pending + 1] = key
  end
  return self
end

-- Fail (NOPERM) unless this user may run `command` on each of `keys`, as in
-- ACL_USE (checked before the first delete: an ACL that lets the user read a
-- key but not change it then fails the call, having deleted nothing).
function Delete.check_allowed(command, keys)
  for first, last in Core.batches(#keys, Core.BATCH) do
    if not redis.acl_check_cmd(command, unpack(keys, first, last)) then
      local refused = keys[first]
      for i = first, last do -- (one check for many: each costs a few microseconds whatever it holds)
        refused = redis.acl_check_cmd(command, keys[i]) and refused or keys[i]
      end
      Core.fail('NOPERM', 'this user may not ' .. Delete.ACL_USE[command] .. ' ' .. Core.show(refused)
        .. ', which it must: grant it '
        .. 'the keys in the README\'s ACL; nothing was deleted')
    end
  end
end

-- check_allowed for every key pending in `sinks` (not in a dry run).
function Delete.check_deletable(b, sinks)
  if b.dry then
    return
  end
  local keys = {}
  for _, s in ipairs(sinks) do
    for _, key in ipairs(s.pending) do
      keys[#keys + 1] = key
    end
  end
  Delete.check_allowed('UNLINK', keys)
end

-- The first doomed checkpoints that `del.left` keys can take, by the first
-- one's keys (itself, its registry, its registered writes), and whether that
-- left some out. A dry run takes all.
function Delete.affordable(del, doomed)
  if del.ctx.dry or #doomed == 0 then
    return doomed, false
  end
  local fit = math.floor(del.left / (del.per + 2)) + 1
  if #doomed <= fit then
    return doomed, false
  end
  local first = {}
  for i = 1, fit do -- not unpack: fit may pass Lua's stack limit
    first[i] = doomed[i]
  end
  return first, true
end

-- Every write of the doomed checkpoints from one query over the thread's
-- writes, when the registry estimate fits `del.reads` and so does the answer;
-- else nil (then they are looked up by checkpoint id, see next_chunk). A
-- shortcut, not a second rule: the same owners judge every key; lookups by
-- id alone cost a thread of 1,000 checkpoints about 30% more server time.
function Delete.all_writes(del, doomed)
  if #doomed == 0 or del.per * #doomed > del.reads then
    return nil
  end
  local res = Search.search(del.ctx.wp_index, '@thread_id:{$t}', del.thread, del.reads)
  if res[1] > #res - 1 then
    return nil -- the thread has more writes than one answer may hold
  end
  del.reads = del.reads - (#res - 1)
  local found = {}
  Delete.match_writes(res, del.thread, del.owners, found)
  return found
end

-- The doomed checkpoints whose writes RediSearch can find by id, and the
-- query parameter of each (by doc); one it cannot is kept, its writes unseen.
function Delete.findable(ctx, doomed)
  local out, params = {}, {}
  for _, d in ipairs(doomed) do
    params[d] = Keys.id_param(d.id, ctx.layout.commas)
    if params[d] then
      out[#out + 1] = d
    end
  end
  return out, params
end

-- The writes index's answer for the doomed checkpoints from position `first`
-- on, within del.reads entries: up to WRITES_CHUNK of them, as many as fit by
-- del.per writes each, halved while their writes do not fit, down to one
-- (whose writes may then take several calls). A chunk of several asks for at
-- most half the reads left, so a cut-short answer always leaves reads for the
-- smaller chunks after it, down to the one checkpoint that gets the rest (a
-- chunk whose answer is cut short takes nothing: which of its checkpoints
-- got all their writes cannot be told). Returns the chunk, the answer and
-- whether it was cut short; every answer is charged to del.reads.
function Delete.next_chunk(del, doomed, first)
  local limit, spent = del.reads, 0
  local size = math.max(1, math.min(Delete.WRITES_CHUNK, math.floor(limit / (2 * math.max(del.per, 1)))))
  while true do
    local chunk, ids, where = {}, {}, {}
    for j = first, math.min(first + size - 1, #doomed) do
      chunk[#chunk + 1] = doomed[j]
      ids[#ids + 1] = del.params[doomed[j]]
      where[#where + 1] = '$c' .. #ids
    end
    local ask = #chunk > 1 and math.floor((limit - spent) / 2) or limit - spent
    -- the id clause first: RediSearch then walks only those ids' entries
    local res = Search.search(del.ctx.wp_index, '@checkpoint_id:{' .. table.concat(where, ' | ') .. '} @thread_id:{$t}',
      del.thread, ask, { ids = ids })
    spent = spent + #res - 1
    local truncated = res[1] > #res - 1
    if #chunk == 1 or not truncated then
      del.reads = limit - spent
      return chunk, res, truncated
    end
    size = math.floor(#chunk / 2)
  end
end

-- The one take: keys[1..n] into sink `s`, n as many as del.left allows (all
-- or none with `whole`), charged to del.left. Whether all of them went.
function Delete.take_keys(del, s, keys, whole)
  local n = math.min(#keys, del.left)
  if whole and n < #keys then
    return false
  end
  local add = s.add -- a local: this runs once per key
  for i = 1, n do
    add(keys[i])
  end
  del.left = del.left - n
  return n == #keys
end

-- Take checkpoint d and its writes `ws` into the sinks while del.left keys
-- remain: false when not all of it fits (the writes that fit are taken). Its
-- own keys, all or none: itself, its registry and, when it takes its
-- namespace's latest pointer with it (del.pointers, the plan's), that pointer.
function Delete.take(del, d, ws, truncated)
  local pointer = del.pointers[d.key] and Keys.latest_key(del.ctx, del.thread, d.ns)
  local own = pointer and 3 or 2
  local fits = not truncated and #ws + own <= del.left
  Delete.take_keys(del, del.writes, ws, false)
  if not fits then
    return false
  end
  Delete.take_keys(del, del.ckpts, { d.key }, true)
  Delete.take_keys(del, del.others, { Keys.registry_key(del.thread, d), pointer }, true)
  return true
end

-- Whether write `key` is stranded: its own fields name a thread (`owner`, when
-- given), namespace and checkpoint (with an id older than `before`, when
-- given), it is stored where the saver would store such a write, and that
-- checkpoint is gone (missing, or a placeholder: see is_placeholder). Returns
-- the checkpoint's key and its doc { ns, id }; else nil.
function Delete.stranded_write(ctx, key, owner, before)
  local t, ns, id = Search.identity(key)
  local d = { ns = ns, id = id }
  if not (t and ns and id) or (owner and t ~= owner) or (before and not Keys.older(id, before))
    or not Keys.starts_with(key, Keys.write_prefix(ctx, { id = t }, d)) then
    return nil -- (the checks that read nothing more come first)
  end
  local checkpoint = Keys.checkpoint_key(ctx, { id = t }, ns, id)
  return Search.checkpoint_gone(checkpoint) and checkpoint or nil, d
end

-- A prune that deletes the whole thread also takes what a crash left of it:
-- writes tagged with the thread that are stranded (see stranded_write) under
-- a checkpoint of the thread not among the listed `docs`, with their
-- registries and placeholders, whatever their age. Writes under a listed
-- checkpoint's write prefix are left to delete_doomed (a placeholder whose id
-- extends a listed one's keeps its writes: when unsure, keep). Reads up to
-- reads_left entries; returns the keys, writes first, and `cut` when the
-- answer was cut short (case variants of the thread with more writes than
-- that): then the call reports more.
function Delete.leftovers(ctx, thread, docs)
  local owners = Delete.write_owners(ctx, thread, docs)
  local res = Search.search(ctx.wp_index, '@thread_id:{$t}', thread, math.min(Core.reads_left(ctx.budget), ctx.cap))
  local writes, others, seen = {}, {}, {}
  for i = 2, #res do
    local key, listed = res[i], false
    for _, len in ipairs(owners.lengths) do
      listed = listed or (key:byte(len) == 58 and owners.prefix[key:sub(1, len)] ~= nil)
    end
    local checkpoint, d
    if not listed then
      checkpoint, d = Delete.stranded_write(ctx, key, thread.id)
    end
    if checkpoint then
      writes[#writes + 1] = key
      if not seen[checkpoint] then
        seen[checkpoint] = true
        others[#others + 1] = Keys.registry_key(thread, d)
        others[#others + 1] = checkpoint -- UNLINK of a missing key counts nothing
      end
    end
  end
  return { writes = writes, others = others, cut = res[1] > #res - 1 }
end

-- Take the doomed checkpoints in order, with the writes `found` for all of
-- them or, when nil, chunk by chunk. Returns true when some are left.
function Delete.take_all(del, doomed, found)
  local i = 1
  while i <= #doomed do
    local chunk, chunk_found, truncated = { doomed[i] }, found, false
    if not found then
      if del.reads < 1 then
        return true
      end
      local res
      chunk, res, truncated = Delete.next_chunk(del, doomed, i)
      chunk_found = {}
      Delete.match_writes(res, del.thread, del.owners, chunk_found)
    end
    for _, d in ipairs(chunk) do
      if not Delete.take(del, d, chunk_found[d.id] or {}, truncated) then
        return true
      end
    end
    i = i + #chunk
  end
  return false
end

-- Delete a plan's doomed checkpoints oldest first, each with all its writes,
-- its registry zset and, when it was its namespace's newest, the latest
-- pointer, then its `leftovers` and freed `blobs` (if any), within the keys the budget leaves
-- (not in a dry run). Writes are found with one query over the thread's
-- writes when the thread was listed `whole` and that fits 2 * reads_left
-- entries, else chunk by chunk of checkpoint ids. A checkpoint whose writes
-- do not all fit loses only writes this call. Returns counts and whether
-- doomed checkpoints, leftovers or blobs remain.
function Delete.delete_doomed(ctx, thread, p, whole)
  local doomed, b = p.doomed, ctx.budget
  local del = { ctx = ctx, thread = thread, pointers = p.pointers, left = Core.keys_left(b),
    reads = math.min(2 * Core.reads_left(b), ctx.cap),
    per = #doomed > 0 and Listing.registered_writes(thread, doomed[1]) or 0, -- writes, by the first
    ckpts = Delete.sink(b), writes = Delete.sink(b), others = Delete.sink(b), blobs = Delete.sink(b) }
  local trimmed
  doomed, trimmed = Delete.affordable(del, doomed)
  del.owners = Delete.write_owners(ctx, thread, doomed)
  local found, dropped = whole and Delete.all_writes(del, doomed) or nil, 0
  if not found then
    local all = #doomed
    doomed, del.params = Delete.findable(ctx, doomed)
    dropped = all - #doomed
  end
  local more = Delete.take_all(del, doomed, found) or trimmed
  local extra = p.leftovers -- all or none, and more when more may exist than were read
  if not more and extra then
    more = #extra.writes + #extra.others > del.left or extra.cut
    if not more then
      Delete.take_keys(del, del.writes, extra.writes, true)
      Delete.take_keys(del, del.others, extra.others, true)
    end
  end
  if not more and p.blobs and dropped == 0 then -- (a checkpoint kept unseen keeps its blobs)
    -- those that did not fit, or, when this call took some, those not read, are the next
    -- call's (a call that read its fill of blobs and freed none would free none next time)
    more = not Delete.take_keys(del, del.blobs, p.blobs.keys, false) or (p.blobs.cut and #p.blobs.keys > 0)
  end
  Delete.check_deletable(b, { del.writes, del.others, del.blobs, del.ckpts })
  del.writes.flush()
  del.others.flush()
  del.blobs.flush()
  del.ckpts.flush()
  return {
    checkpoints = del.ckpts.deleted,
    writes = del.writes.deleted,
    blobs = del.blobs.deleted,
    keys = del.ckpts.deleted + del.writes.deleted + del.others.deleted + del.blobs.deleted,
    more = more,
  }
end

-- A write prefix that is not the saver's would orphan every write of the
-- checkpoints deleted. The registry zsets record the real write keys: check
-- those of the first doomed checkpoints that have any, before any delete.
function Delete.check_write_prefix(ctx, thread, doomed)
  if ctx.checked.write_prefix then
    return -- once per call: the saver's prefix is the same for every thread
  end
  for i = 1, math.min(#doomed, 8) do
    local d = doomed[i]
    local member = rcall('ZRANGE', Keys.registry_key(thread, d), 0, 0)[1]
    if member then
      if not Keys.starts_with(member, Keys.write_prefix(ctx, thread, d)) then
        Core.fail('BADARG', 'the writes of ' .. Core.show(d.key) .. ' are stored as ' .. Core.show(member)
          .. ', not under WRITE_PREFIX ' .. Core.show(ctx.wp) .. ': pass the saver\'s '
          .. 'checkpoint_write_prefix; nothing was deleted')
      end
      ctx.checked.write_prefix = true
      return
    end
  end
end

-- One thread ----------------------------------------------------------------------
-- List, plan and delete one thread within what the call's budget leaves; the reply counts. A thread
-- fails, if it does, before its first delete.
-- Provides: add_counts, prune_thread, reply, zero_counts
-- Assumes: Blobs.freed_blobs, Core.keys_left, Core.reads_left, Delete.check_write_prefix,
--   Delete.delete_doomed, Delete.leftovers, Listing.first_look, Listing.list_checkpoints,
--   Listing.newest_root, Listing.registered_writes, Plan.plan
local Thread = {}

Thread.PAGE_SLACK = 16 -- checkpoints listed beyond what the budget is expected to delete

-- The counts each prune reports, in reply order (lgprune_thread and
-- lgprune_many add `more` / `next`).
local COUNT_FIELDS = { 'checkpoints_deleted', 'writes_deleted', 'keys_deleted',
  'checkpoints_kept', 'delta_ancestors_kept', 'blobs_deleted' }

-- The counts, at zero.
function Thread.zero_counts()
  local out = {}
  for _, name in ipairs(COUNT_FIELDS) do
    out[name] = 0
  end
  return out
end

-- Add the counts of `part` into `total`.
function Thread.add_counts(total, part)
  for _, name in ipairs(COUNT_FIELDS) do
    total[name] = (total[name] or 0) + part[name]
  end
end

-- Flatten counts into a name/value reply: COUNT_FIELDS, then `last` (when
-- given), or the names in `fields`.
function Thread.reply(out, last, fields)
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

-- Keys a root checkpoint of the thread takes with it, judged by the newest
-- one (a doc, or nil): itself, its registry and the writes listed there.
function Thread.keys_per_checkpoint(thread, newest)
  return newest and Listing.registered_writes(thread, newest) + 2 or 3
end

-- List and plan the thread under `view` (see list_checkpoints); a partial
-- view first looks at a page sized by what the budget deletes (by the keys of
-- the newest checkpoint), and at the whole view when that page frees nothing
-- (DeltaChannel ancestors may hold all of it). When the root window cannot
-- prove it holds the true newest and the plan needs them (DeltaChannel
-- history, IDLE_TTL), or the window holds none of the root's older
-- checkpoints, the root is listed again, sorted. Returns the docs and the plan.
function Thread.list_and_plan(ctx, thread, view, rule)
  view.page = view.limit
  if view.sorted then
    view.newest = Listing.newest_root(ctx, thread)
    if not ctx.dry then
      local fit = math.ceil(Core.keys_left(ctx.budget) / Thread.keys_per_checkpoint(thread, view.newest))
      view.page = math.min(view.limit, fit + math.min(rule.keep, view.limit) + Thread.PAGE_SLACK)
    end
  end
  local docs, exact = Listing.list_checkpoints(ctx, thread, view, rule)
  local p = Plan.plan(ctx, thread, docs, rule, not view.sorted)
  if #p.doomed == 0 and view.page < view.limit then
    view.page = view.limit
    docs, exact = Listing.list_checkpoints(ctx, thread, view, rule)
    p = Plan.plan(ctx, thread, docs, rule, false)
  end
  local needs_exact = p.delta or rule.idle_before -- DeltaChannel history, and idleness, are the true newest's
  local windowed = view.newest and view.newest.ts -- (without a window, the root was listed sorted)
  if windowed and ((needs_exact and not exact) or (#p.doomed == 0 and p.roots <= rule.keep)) then
    docs = Listing.list_checkpoints(ctx, thread, view, nil)
    p = Plan.plan(ctx, thread, docs, rule, false)
  end
  return docs, p
end

-- Whether `rule` deletes every checkpoint of a thread: KEEP 0, no age limit.
function Thread.deletes_all(rule)
  return rule.keep == 0 and not rule.old_before
end

-- Prune one thread (a thread record) under `rule` within what ctx.budget
-- leaves. Returns the counts of lgprune_thread, plus `idle`, `listed` and
-- `count_exact` (whether checkpoints_kept is exact) for sweeps.
function Thread.prune_thread(ctx, thread, rule)
  local out = Thread.zero_counts()
  out.more, out.idle, out.listed, out.count_exact = 0, false, false, true
  local limit = math.min(Core.reads_left(ctx.budget) + math.min(rule.keep, ctx.cap), ctx.cap)
  local tagged, first = Listing.first_look(ctx, thread, limit)
  out.checkpoints_kept = tagged
  if ctx.sweep and not ctx.details and not rule.idle_before and tagged <= rule.keep then
    -- most threads a sweep visits are within keep: the first look settles those
    out.count_exact = tagged == 0
    return out -- nothing over keep (the tag count is an upper bound)
  end
  if tagged == 0 and not Thread.deletes_all(rule) then
    return out -- (a thread deleted whole may still have leftovers)
  end
  -- the whole thread when it fits the budget, else its newest entries
  local view = { limit = math.min(tagged, limit), tagged = tagged, first = first }
  view.sorted = view.limit < tagged
  local docs, p = Thread.list_and_plan(ctx, thread, view, rule)
  out.listed = true
  Delete.check_write_prefix(ctx, thread, p.doomed)
  if Thread.deletes_all(rule) and not view.sorted then
    p.leftovers = Delete.leftovers(ctx, thread, docs)
  end
  if ctx.layout.blobs and not view.sorted then
    p.blobs = Blobs.freed_blobs(ctx, thread, docs, p) -- (a thread listed in part: by its last call)
  end
  local done = Delete.delete_doomed(ctx, thread, p, not view.sorted)
  out.checkpoints_deleted, out.writes_deleted, out.keys_deleted = done.checkpoints, done.writes, done.keys
  out.blobs_deleted = done.blobs
  out.delta_ancestors_kept, out.idle = p.spared, p.idle
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

-- Sweeps and orphans -------------------------------------------------------------
-- A sweep's visits (one thread of a pass, its failure recorded as data) and the orphans phase (SCAN
-- for keys whose checkpoint is gone: it finds no thread). A sweep charges its budget's `work` for
-- what is not a delete; a call stops once keys + work reach BUDGET.
-- Provides: COST, counted, orphan_steps, spent, sweep_state, visit
-- Assumes: MIN_BUDGET, rcall, Core.guard, Core.keys_left, Core.now_ms, Core.thread_failure,
--   Delete.check_allowed, Delete.sink, Delete.stranded_write, Keys.DEFAULT_GRACE_MS, Keys.ZSET_PREFIX,
--   Keys.latest_start, Keys.older, Keys.registry_owner, Keys.starts_with, Keys.thread_record,
--   Search.checkpoint_gone, Search.get_string, Search.is_placeholder, Search.unless_wrongtype,
--   Thread.add_counts, Thread.prune_thread
local Sweep = {}

Sweep.SCAN_COUNT = 50 -- keys per SCAN step of the orphans phase
Sweep.MAX_FAILED = 100 -- failed threads named in one reply (all are counted)
-- Budget units a sweep charges for what is not a delete:
Sweep.COST = {
  visit = 10, -- a thread visit
  list = 40, -- ... and more when the visit lists and plans the thread
  check = 5, -- an orphan check, or a read of a thread's newest root checkpoint
  noted = 1, -- a thread's place in a pass read from the pass's note (see Pass.placement)
  scan_keys = 8, -- a SCAN step: 1 per this many keys it examines
}

-- Orphan checks, each true for a key of this saver whose checkpoint is gone
-- and whose checkpoint id dates from before `before` (ms).
-- A latest pointer: its target checkpoint is gone.
function Sweep.orphan_pointer(ctx, key, before)
  local target = Search.get_string(key)
  if not target or not Keys.starts_with(target, ctx.cp .. ':') then
    return false
  end
  return rcall('EXISTS', target) == 0 and Keys.older(target:match(':([^:]*)$'), before)
end

-- A write: stranded (see stranded_write: the checkpoint its own fields name is gone).
function Sweep.orphan_write(ctx, key, before)
  return Delete.stranded_write(ctx, key, nil, before) ~= nil
end

-- A write registry: write_keys_zset:<stem> lists writes <wp>:<stem>:..., and
-- the checkpoint <cp>:<stem> is gone (missing or a placeholder). (Registries
-- of other prefixes list other write keys and are left alone; so is a key of
-- another type.)
function Sweep.orphan_registry(ctx, key, before)
  local checkpoint, writes = Keys.registry_owner(ctx, key)
  local range = Search.unless_wrongtype(pcall(rcall, 'ZRANGE', key, 0, 0))
  local first = range and range[1]
  if type(first) ~= 'string' or not Keys.starts_with(first, writes) then
    return false
  end
  return Keys.older(key:match(':([^:]*)$'), before) and Search.checkpoint_gone(checkpoint)
end

-- A placeholder (see is_placeholder) under the checkpoint prefix: its writes
-- never got their checkpoint.
function Sweep.orphan_placeholder(ctx, key, before)
  return Keys.starts_with(key, ctx.cp .. ':') and Keys.older(key:match(':([^:]*)$'), before)
    and Search.is_placeholder(key)
end

-- A sweep call's state: the counts of its reply (`out`), the threads it saw,
-- per-thread details, the threads that failed, the orphans found; the budget
-- is ctx.budget.
function Sweep.sweep_state(ctx, rule, opts)
  return {
    ctx = ctx, rule = rule, opts = opts,
    before = Core.now_ms() - (opts.GRACE or Keys.DEFAULT_GRACE_MS),
    out = { threads_visited = 0, threads_pruned = 0, threads_deleted = 0, threads_skipped = 0, threads_failed = 0,
      checkpoints_deleted = 0, writes_deleted = 0, keys_deleted = 0, orphans_deleted = 0, blobs_deleted = 0 },
    seen = {}, details = {}, failed = {}, orphans = Delete.sink(ctx.budget), unfinished = false,
  }
end

-- Whether the sweep's budget is spent: keys deleted and work reach BUDGET.
function Sweep.spent(b)
  return b.keys + b.work >= b.total
end

-- Count one visit's result into the sweep.
function Sweep.count_visit(sw, id, done)
  local out = sw.out
  if sw.opts.DETAILS then
    sw.details[#sw.details + 1] = { id, done.checkpoints_kept + done.checkpoints_deleted,
      done.checkpoints_deleted, done.keys_deleted, done.count_exact and 1 or 0 }
  end
  Thread.add_counts(out, done)
  if done.listed then
    sw.ctx.budget.work = sw.ctx.budget.work + Sweep.COST.list
  end
  if sw.ctx.dry then
    sw.ctx.budget.work = sw.ctx.budget.work + done.keys_deleted -- what would go, charged as work
  end
  if done.keys_deleted > 0 then
    out.threads_pruned = out.threads_pruned + 1
  end
  if done.idle and done.more == 0 then
    out.threads_deleted = out.threads_deleted + 1
  end
end

-- Prune thread `id` (as stored: the layout's empty_id is thread "") under the
-- sweep's rule. False when the call must stop before it: its budget is spent
-- and it deleted something, or the thread failed after this call deleted
-- something (the next call meets it first, with a whole BUDGET: a thread that
-- needs more than what was left, such as a DeltaChannel walk longer than
-- reads_left, is pruned then). Else true, its counts and, when it cannot be
-- pruned, why: a thread's failure (see thread_failure), or an id lgprune
-- cannot prune by (see thread_record), is data, and the sweep goes on; an
-- error of the whole call (no index, no rights) is the call's.
function Sweep.visit(sw, id)
  local ctx, b = sw.ctx, sw.ctx.budget
  if Core.keys_left(b) < MIN_BUDGET or (b.keys > 0 and Sweep.spent(b)) then
    return false
  end
  local layout = ctx.layout
  local thread, unprunable = Keys.thread_record(id == layout.empty_id and '' or id, layout)
  local done, why = nil, unprunable and 'BADDATA ' .. unprunable .. ': delete it by hand'
  if thread then
    local ok, res = pcall(Thread.prune_thread, ctx, thread, sw.rule)
    if ok then
      done = res
    elseif b.keys > 0 then
      return false
    else
      why = Core.thread_failure(res)
    end
  end
  sw.seen[id] = true
  b.work = b.work + Sweep.COST.visit
  return true, done, why
end

-- Count a visit (`done`: its counts, nil when skipped; `why`: its failure)
-- into the sweep. Whether to go on past the thread: false to come back to it,
-- when this call got somewhere with it and it has more (it counts as visited
-- once it is passed). A thread left with more and no progress is passed
-- over, and then the pass is not complete (`sw.unfinished`: no watermark). A
-- failed thread is named in the reply and passed over; the pass goes on and
-- completes without it (the next full pass meets it again).
function Sweep.counted(sw, id, done, why)
  local out = sw.out
  if why then
    out.threads_failed = out.threads_failed + 1
    if #sw.failed < Sweep.MAX_FAILED then
      sw.failed[#sw.failed + 1] = { id, why }
    end
  elseif not done then
    out.threads_skipped = out.threads_skipped + 1
  else
    Sweep.count_visit(sw, id, done)
    local dry = sw.ctx.dry
    if done.more == 1 and not dry and done.keys_deleted == 0 then
      sw.unfinished = true
    end
    if done.more == 1 and not dry and done.keys_deleted > 0 then
      return false
    end
  end
  out.threads_visited = out.threads_visited + 1
  return true
end

-- Collect orphan `key`, to be deleted as the call ends, once the ACL is known
-- to let it go (else the call fails here: under guard, after a delete, that
-- ends the call and the next one fails before its first delete).
function Sweep.add_orphan(sw, key)
  if not sw.ctx.dry then
    Delete.check_allowed('UNLINK', { key })
  end
  sw.orphans.add(key)
end

-- Judge one key of the orphans phase: a latest pointer, write, registry or
-- placeholder whose checkpoint is gone goes (see the orphan checks).
function Sweep.sweep_orphan(sw, key)
  local ctx = sw.ctx
  local check
  if Keys.starts_with(key, Keys.latest_start(ctx)) then
    check = Sweep.orphan_pointer
  elseif Keys.starts_with(key, ctx.wp .. ':') then
    check = Sweep.orphan_write
  elseif Keys.starts_with(key, Keys.ZSET_PREFIX .. ':') then
    check = Sweep.orphan_registry
  elseif Keys.starts_with(key, ctx.cp .. ':') then
    check = Sweep.orphan_placeholder
  end
  if check then
    ctx.budget.work = ctx.budget.work + Sweep.COST.check
    if check(ctx, key, sw.before) then
      Sweep.add_orphan(sw, key)
    end
  end
end

-- Judge the keys of one SCAN step (see sweep_orphan); false when the orphans
-- found reach the keys the call may still delete (the step is read again by
-- the next call, which finds those gone).
function Sweep.judge_keys(sw, keys)
  local b, pending = sw.ctx.budget, sw.orphans.pending
  for _, key in ipairs(keys) do
    if #pending >= Core.keys_left(b) then
      return false
    end
    Sweep.sweep_orphan(sw, key)
  end
  return true
end

-- The orphans phase of a full pass (ORPHANS): SCAN from `cursor`, judging
-- every key of each step, until the keyspace is done or the budget is spent.
-- Returns the cursor to resume from and whether the phase is done. It visits
-- no thread: the pass found those through the index.
function Sweep.orphan_steps(sw, cursor)
  local b = sw.ctx.budget
  local step_cost = math.ceil(Sweep.SCAN_COUNT / Sweep.COST.scan_keys)
  repeat
    local res = rcall('SCAN', cursor, 'COUNT', Sweep.SCAN_COUNT)
    local ok, judged = Core.guard(b, Sweep.judge_keys, sw, res[2])
    if not (ok and judged) then
      return cursor, false -- the budget, or a failure after a delete: the next call reads the step again
    end
    b.work = b.work + step_cost
    cursor = res[1]
    if cursor == '0' then
      return cursor, true
    end
  until Sweep.spent(b)
  return cursor, false
end

-- Passes: full and incremental ----------------------------------------------------
-- A sweep pass and its cursor, the watermark (when the last complete pass of the same rule began)
-- and the one way a sweep finds threads: through the checkpoint index by checkpoint_ts, an
-- incremental pass in the time windows since the watermark, a full pass over every checkpoint_ts
-- there can be. checkpoint_ts is the writing client's clock in ms (a float, stamped before the
-- write reaches Redis); a document without it finds no thread (its thread's others may).
-- Watermarks are server time: MARGIN covers the clients' skew and put latency.
-- Provides: ms, parse_cursor, pass_cursor, record_pass, window_steps
-- Assumes: WATERMARKS, rcall, Core.BATCH, Core.batches, Core.fail, Core.guard, Core.now_ms, Core.show,
--   Delete.check_allowed, Keys.LAYOUTS, Keys.dense_key, Keys.thread_record, Listing.newest_root,
--   Search.capped, Search.json_mget, Search.search, Search.unless_wrongtype, Sweep.COST, Sweep.counted,
--   Sweep.spent, Sweep.visit
local Pass = {}

Pass.MAX_STAMP = 2 ^ 53 -- a full pass over segments reads checkpoint_ts from -this to this
local SEGMENTS = {
  MARGIN_MS = 600000, -- default: how far before the watermark an incremental pass reads
  FIRST_WIDTH = 60000, -- ms of checkpoint_ts a pass's first segment spans; then it adapts
  UNITS = 20, -- a segment holds at most BUDGET / this many index entries (50 at least)
  ENTRIES_PER_UNIT = 20, -- a count costs 1 budget unit per this many entries it returns
}
Pass.GROUP_UNITS_PER_ENTRY = 2 -- grouping a segment by thread costs 2 units per entry (it loads each thread_id),
-- at most half the budget: a dense millisecond, grouped again by each call that resumes in it, leaves
-- each call room to visit threads (collecting a dense segment's threads costs as much per entry)
-- A segment holding more entries than one aggregate may read (a dense
-- millisecond: a bulk import, a coarse clock) is read in pages across calls
-- (every read of a call stays bounded): its thread ids are collected into
-- its key (dense_key), then visited from there in byte order. Not in a dry
-- run, which cannot write: it passes over the segment, the pass unfinished.
local dense = {
  TTL_S = 86400, -- an abandoned pass's key goes after a day
  NOTES_TTL_S = 600, -- its notes (see Pass.placement) ten minutes after the last call that wrote them
}

-- A whole number of milliseconds as text (as cursors, fields and queries hold them).
function Pass.ms(v)
  return string.format('%.0f', v)
end

-- MARGIN, or its default.
function Pass.margin_of(opts)
  return opts.MARGIN or SEGMENTS.MARGIN_MS
end

-- The watermark's field: the rule, prefixes and margin a pass applies, spelled
-- once. (A pass with a smaller margin covers less: each margin has its own.)
function Pass.rule_field(ctx, rule, opts)
  local function given(v)
    return v and Pass.ms(v) or '-'
  end
  local field = { ctx.cp, ctx.wp, 'keep ' .. Pass.ms(rule.keep), 'max_age ' .. given(opts.MAX_AGE),
    'idle_ttl ' .. given(opts.IDLE_TTL), 'margin ' .. Pass.ms(Pass.margin_of(opts)) }
  if ctx.layout ~= Keys.LAYOUTS.python then
    field[#field + 1] = 'layout ' .. ctx.layout.name -- (python's fields stay as 0.3 wrote them)
  end
  return cjson.encode(field)
end

-- The field of the rule's last full pass.
function Pass.full_field(field)
  return 'full ' .. field
end

-- What a cursor must match to continue a pass: its rule and kind of run.
function Pass.fingerprint(field, opts)
  local run = { field, opts.FULL and 'full' or '', opts.ORPHANS and 'orphans' or '',
    opts.DRY_RUN and 'dry' or '', Pass.ms(opts.FULL_EVERY or -1) }
  return redis.sha1hex(table.concat(run, '|')):sub(1, 16)
end

-- The rule's watermark and its last full pass (server ms, nil when none). A
-- mark later than `now` (the server's clock went back, or the data came from
-- another server) is no mark.
function Pass.read_marks(field, now)
  local marks = rcall('HMGET', WATERMARKS, field, Pass.full_field(field))
  local mark, full = tonumber(marks[1] or nil), tonumber(marks[2] or nil)
  return mark and mark <= now and mark or nil, full and full <= now and full or nil
end

-- A pass, as a cursor carries it between calls:
--   kind        'full' or 'incremental': full when FULL, ORPHANS, no watermark,
--               or FULL_EVERY since the last full one. Either reads segments of
--               checkpoint_ts: a full pass every checkpoint_ts there can be,
--               an incremental one its windows (see windows)
--   field, fp   its watermark field and fingerprint
--   start       server ms at which it began
--   unfinished  it passed over a thread it could not finish (or, in a dry
--               run, a segment holding more entries than one aggregate may
--               read): it records no watermark
--   since       (incremental) the watermark less MARGIN
--   lo, width   the segment under way: checkpoint_ts in [lo, lo + width)
--   after       the last thread of that segment visited, or nil
--   dense       a segment holding more entries than one aggregate may read
--               (see dense): 'c' its threads are being collected from the
--               first entry, 'c<offset>.<anchor>' from that entry (anchor:
--               dense.digest of the key before it), 'v' they are being
--               visited (after: by bytes); nil for any other segment
--   scan        (ORPHANS, once the segments are done) the orphans phase's SCAN cursor
function Pass.begin_pass(ctx, rule, opts)
  local field = Pass.rule_field(ctx, rule, opts)
  local pass = { field = field, fp = Pass.fingerprint(field, opts), start = Core.now_ms(), unfinished = false }
  local mark, full = Pass.read_marks(field, pass.start)
  local due = opts.FULL_EVERY and (not full or full <= pass.start - opts.FULL_EVERY)
  pass.kind = (mark and not (opts.FULL or opts.ORPHANS or due)) and 'incremental' or 'full'
  pass.since = pass.kind == 'incremental' and mark - Pass.margin_of(opts) or nil
  -- a full one first counts all of [-MAX_STAMP, MAX_STAMP) and narrows from there
  pass.lo, pass.width = -math.huge, pass.since and SEGMENTS.FIRST_WIDTH or Pass.MAX_STAMP
  return pass
end

-- The windows of checkpoint_ts a pass reads, [lo, hi) in order, overlaps
-- merged: checkpoints stored since the watermark (less MARGIN); and for each
-- age rule (MAX_AGE, IDLE_TTL) those that crossed that age since then. A
-- full pass over segments reads every checkpoint_ts there can be (a writer's
-- clock may run ahead of the server's).
function Pass.windows(pass, opts)
  if pass.kind == 'full' then
    return { { -Pass.MAX_STAMP, Pass.MAX_STAMP } }
  end
  local margin = Pass.margin_of(opts)
  local list = { { pass.since, pass.start } }
  for _, age in ipairs({ opts.MAX_AGE or false, opts.IDLE_TTL or false }) do
    if age then
      list[#list + 1] = { pass.since - age, pass.start - age + margin }
    end
  end
  table.sort(list, function(a, b) return a[1] < b[1] end)
  local merged = { list[1] }
  for i = 2, #list do
    local last = merged[#merged]
    if list[i][1] <= last[2] then
      last[2] = math.max(last[2], list[i][2])
    else
      merged[#merged + 1] = list[i]
    end
  end
  return merged
end

-- The offset (digits, '' for the first entry) and anchor (hex, '') of a
-- collecting phase 'c<offset>.<anchor>' (see dense.collect); nil if not one.
function dense.collecting(phase)
  return phase:match('^c(%d*)%.?(%x*)$')
end

-- Whether a cursor's dense phase (pass.dense) has a form a pass can leave:
-- 'v', or 'c' / 'c<offset>.<anchor>' (an offset from 1 below 10^15, an
-- anchor of 16 hex digits) with no thread passed. (A phase whose key is gone
-- is passed over: see dense.segment.)
function dense.continues(pass)
  local d = pass.dense
  if not d or d == 'v' then
    return true
  end
  local offset, anchor = dense.collecting(d)
  return not pass.after and offset ~= nil and ((offset == '' and anchor == '')
    or (#offset <= 15 and tonumber(offset) >= 1 and #anchor == 16))
end

-- Refuse a cursor that cannot come from a pass begun on this server as it
-- stands: begun later than now, reading from after the rule's watermark less
-- MARGIN (a mark moves only forward), which would skip what it has not read,
-- or a segment outside the pass's windows or without width (which would end
-- the pass, or never move).
function Pass.check_cursor(pass, opts)
  local now = Core.now_ms()
  local mark = Pass.read_marks(pass.field, now)
  local from = mark and mark - Pass.margin_of(opts)
  local w = Pass.windows(pass, opts)
  local lo_ok
  if pass.scan then
    lo_ok = #pass.scan <= 19 -- a SCAN cursor below 2^63
  else
    lo_ok = pass.width >= 1 and pass.width <= Pass.MAX_STAMP and pass.lo >= w[1][1] and pass.lo < w[#w][2]
      and dense.continues(pass)
  end
  if pass.start > now or not lo_ok or (pass.kind == 'incremental' and not (from and pass.since <= from
      and pass.since <= pass.start)) then
    Core.fail('BADARG', 'CURSOR does not continue a sweep of this server as it stands: start again from "0"')
  end
  return pass
end

local CURSORS = {
  orphans = '^o:(%x+):(%d+):([01]):(%d+)$', -- the orphans phase of a full pass
  -- i: incremental, j: full; then start, since, lo, width, unfinished, dense, after
  segments = '^([ij]):(%x+):(%d+):(%-?%d+):(%-?%d+):(%d+):([01]):([cv]?[%.%x]*):(.*)$',
}

-- The pass a cursor continues, or a new one for "0"; refuses a cursor of
-- another rule, margin or kind of run.
function Pass.parse_cursor(cursor, ctx, rule, opts)
  if cursor == '0' then
    return Pass.begin_pass(ctx, rule, opts)
  end
  local pass = { field = Pass.rule_field(ctx, rule, opts) }
  pass.fp = Pass.fingerprint(pass.field, opts)
  local fp, start, u, scan = cursor:match(CURSORS.orphans)
  local letter, from, lo, width, phase, after
  if fp then
    pass.kind, pass.scan = 'full', scan
  else
    letter, fp, start, from, lo, width, u, phase, after = cursor:match(CURSORS.segments)
    pass.kind = letter == 'i' and 'incremental' or 'full'
    pass.since = letter == 'i' and tonumber(from) or nil
    pass.lo, pass.width = tonumber(lo), tonumber(width)
    pass.dense = phase ~= '' and phase or nil
    pass.after = after and after ~= '' and after:sub(2) or nil
  end
  if not fp then -- (lgprune 0.2's numeric SCAN cursors too: start again from "0")
    Core.fail('BADARG', 'CURSOR must be "0" or a cursor returned by lgprune_sweep, got ' .. Core.show(cursor))
  end
  if fp ~= pass.fp then
    Core.fail('BADARG', 'CURSOR belongs to a sweep with another rule, margin or kind of run: start again from "0"')
  end
  pass.start, pass.unfinished = tonumber(start), u == '1'
  return Pass.check_cursor(pass, opts)
end

-- The cursor that continues `pass` ("0" once it is done).
function Pass.pass_cursor(pass, done)
  if done then
    return '0'
  end
  local u = pass.unfinished and '1' or '0'
  if pass.scan then
    return table.concat({ 'o', pass.fp, Pass.ms(pass.start), u, pass.scan }, ':')
  end
  return table.concat({ pass.kind == 'incremental' and 'i' or 'j', pass.fp, Pass.ms(pass.start), Pass.ms(pass.since or 0),
    Pass.ms(pass.lo), Pass.ms(pass.width), u, pass.dense or '', pass.after and '>' .. pass.after or '' }, ':')
end

-- Record that `pass` completed: its rule's watermark (and, for a full pass,
-- "full <rule>") moves to when it began, never back (unless it is later than
-- now, see read_marks). Not for a dry run, nor a pass left unfinished.
function Pass.record_pass(pass, dry)
  if dry or pass.unfinished then
    return
  end
  local mark, full = Pass.read_marks(pass.field, Core.now_ms())
  if not mark or mark < pass.start then
    rcall('HSET', WATERMARKS, pass.field, Pass.ms(pass.start))
  end
  if pass.kind == 'full' and (not full or full < pass.start) then
    rcall('HSET', WATERMARKS, Pass.full_field(pass.field), Pass.ms(pass.start))
  end
end

Pass.BOUNDED = { bounded = true } -- (see query_args)

-- The checkpoint index's query for checkpoint_ts in [lo, hi).
function Pass.ts_range(lo, hi)
  return '@checkpoint_ts:[' .. Pass.ms(lo) .. ' (' .. Pass.ms(hi) .. ']'
end

-- How many checkpoint documents have checkpoint_ts in [lo, hi), up to `most`
-- + 1 (more than `most`; most < the search cap). DIALECT 4 stops at the
-- LIMIT: a count costs what it returns, not what the range holds (RediSearch
-- counts a range entry by entry: a whole store's would take ~35 ms per million).
function Pass.ts_count(ctx, lo, hi, most)
  local res = Search.search(ctx.cp_index, Pass.ts_range(lo, hi), nil, most + 1, Pass.BOUNDED)
  ctx.budget.work = ctx.budget.work + 1 + math.floor((#res - 1) / SEGMENTS.ENTRIES_PER_UNIT)
  return #res - 1
end

-- Whether a sorts before b: by the server's string order, and by bytes where
-- that finds two different strings equal. A total order, for sort and resume.
function Pass.before(a, b)
  if a < b then
    return true
  elseif a == b or b < a then
    return false
  end
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = a:byte(i), b:byte(i)
    if x ~= y then
      return x < y
    end
  end
  return #a < #b
end

-- The thread ids (as stored) of the `n` checkpoints with checkpoint_ts in
-- [lo, hi), sorted (see before), and how many groups had no id (a document
-- without a thread_id, or one the index cannot group). The aggregate reads
-- every entry of the range: `n` is at most what one may read (segment_cap).
function Pass.ts_threads(ctx, lo, hi, n)
  local ok, res = Search.capped('group_cap', 'FT.AGGREGATE', ctx.cp_index, Pass.ts_range(lo, hi), 'GROUPBY', '1',
    '@thread_id', 'LIMIT', '0', tostring(math.max(n, 1)), 'TIMEOUT', '0', 'DIALECT', '2')
  if not ok then
    error(res, 0)
  end
  ctx.budget.work = ctx.budget.work + math.min(n * Pass.GROUP_UNITS_PER_ENTRY, math.floor(ctx.budget.total / 2))
  local ids = {}
  for i = 2, #res do
    local row = res[i]
    if row[1] == 'thread_id' and type(row[2]) == 'string' then
      ids[#ids + 1] = row[2]
    end
  end
  if #res - 1 < math.min(res[1], n) then -- a search timeout returns partial results
    Core.fail('PARTIAL', 'the index grouped ' .. (#res - 1) .. ' of ' .. res[1] .. ' threads; try again')
  end
  table.sort(ids, Pass.before)
  return ids, #res - 1 - #ids
end

-- Where thread `id` (as stored) is visited in the pass: the checkpoint_ts of
-- its newest root checkpoint (see newest_root), false when it has none; read
-- once per call (an id lgprune refuses to prune is placed all the same: it is
-- named once per pass). In a dense segment, which meets each thread it holds
-- once per pass but a thread may be met in many (a clone, an import), the
-- place read first is noted for the pass (sw.notes, written by dense.note)
-- and read from there: a thread written since is placed as it stood (its
-- newer checkpoints, stamped after the pass began, are the next pass's), and
-- a lost note is read again.
function Pass.placement(sw, id)
  local ts = sw.newest[id]
  local noted = false
  if ts == nil and sw.notes then
    noted = Search.unless_wrongtype(pcall(rcall, 'HGET', sw.notes.key, id))
    if noted == nil then
      sw.notes, noted = nil, false -- a key of another type there holds no notes: none are written
    end
  end
  if noted then
    ts = tonumber(noted) or false
    sw.ctx.budget.work = sw.ctx.budget.work + Sweep.COST.noted
  elseif ts == nil then
    local layout = sw.ctx.layout
    local thread = Keys.thread_record(id == layout.empty_id and '' or id, layout) or { id = id }
    local newest = Listing.newest_root(sw.ctx, thread)
    ts = newest and newest.ts or false
    sw.ctx.budget.work = sw.ctx.budget.work + Sweep.COST.check
    if sw.notes then
      local n = #sw.notes
      sw.notes[n + 1], sw.notes[n + 2] = id, ts and string.format('%.17g', ts) or ''
    end
  end
  sw.newest[id] = ts
  return ts
end

-- Whether thread `id` (as stored), met in segment [lo, hi), is visited in
-- another segment of this pass: the one holding its newest root checkpoint
-- (see placement), when that lies in the pass's windows outside [lo, hi) (a
-- segment before it was read already, one after it will be).
function Pass.visited_elsewhere(sw, id, lo, hi)
  local ts = Pass.placement(sw, id)
  if not ts or (lo <= ts and ts < hi) then
    return false
  end
  for _, w in ipairs(sw.windows) do
    if w[1] <= ts and ts < w[2] then
      return true
    end
  end
  return false
end

-- The most entries a segment's count and grouping may ask for here.
function Pass.segment_cap(ctx)
  return math.min(ctx.group_cap, ctx.cap - 1)
end

-- The entries a new segment is narrowed to (BUDGET / SEGMENTS.UNITS, 50 at
-- least): one holding more (a dense millisecond) is grouped again by each
-- call that resumes in it, unless it is read in pages (see visit_segment).
function Pass.segment_limit(ctx)
  return math.min(Pass.segment_cap(ctx), math.max(50, math.floor(ctx.budget.total / SEGMENTS.UNITS)))
end

-- The segment the pass is in or begins next within window w: [lo, hi), its
-- entries (up to segment_cap + 1: more are not counted) and whether they
-- were few (the width doubles next). A new segment is narrowed by counts to
-- BUDGET / SEGMENTS.UNITS entries (or 1 ms, however many it holds); the width
-- carries over, so a call whose counts spent its budget (nil) leaves the
-- next one a narrower segment to count. The segment under way (pass.after)
-- is counted again as it stands; a dense one (pass.dense) no more.
function Pass.segment(sw, pass, w)
  local ctx = sw.ctx
  local most, limit = Pass.segment_cap(ctx), Pass.segment_limit(ctx)
  local lo = math.max(pass.lo, w[1])
  pass.lo = lo -- (a cursor cannot carry -inf)
  if pass.dense then
    return lo, math.min(lo + pass.width, w[2]), nil, false
  end
  while true do
    local hi = math.min(lo + pass.width, w[2])
    local n = Pass.ts_count(ctx, lo, hi, limit) -- (a count returns what it counts: ask no more than needed)
    if n <= limit then
      return lo, hi, n, not pass.after and n < limit / 4
    elseif hi - lo <= 1 or pass.after then -- a dense millisecond, or a segment that grew since
      return lo, hi, Pass.ts_count(ctx, lo, hi, most), false
    end
    pass.width = math.max(1, math.floor((hi - lo) / 2))
    if Sweep.spent(ctx.budget) then
      return nil -- counting used the budget: the next call narrows on from here
    end
  end
end

-- Visit thread `id` of segment [lo, hi), unless this call saw it or the pass
-- visits it elsewhere, and move pass.after to it; false when the call stops
-- before it (its budget is spent) or inside it.
function Pass.visit_next(sw, pass, id, lo, hi)
  if sw.moved and Sweep.spent(sw.ctx.budget) then
    return false
  end
  if not sw.seen[id] and not Pass.visited_elsewhere(sw, id, lo, hi) then
    local go, done, why = Sweep.visit(sw, id)
    if not go or not Sweep.counted(sw, id, done, why) then
      return false
    end
  end
  pass.after, sw.moved = id, true
  return true
end

-- The entries a page of a dense segment holds (or its collected threads):
-- what three quarters of the budget group (50 at least), and at most
-- segment_cap. Each page reads the entries before it again, so collecting
-- a millisecond of n entries reads n^2 / (2 * page) of them: the skipping
-- outweighs all else past ~20,000 entries, and pages are as large as a call
-- may take with room left for its skip charge and a few visits.
function dense.page_size(ctx)
  return math.min(Pass.segment_cap(ctx), math.max(50, math.floor(ctx.budget.total * 3 / 4 / Pass.GROUP_UNITS_PER_ENTRY)))
end

-- The keys of `count` entries of dense segment [lo, hi) from `offset`, in
-- index order (a bounded search: it reads offset + count entries).
function dense.page(ctx, offset, lo, hi, count)
  local res = Search.search(ctx.cp_index, Pass.ts_range(lo, hi), nil, count, { bounded = true, offset = offset })
  local keys = {}
  for i = 2, #res do
    keys[i - 1] = res[i]
  end
  return keys
end

-- Add the thread ids of documents `keys` to `key` (score 0: in byte order),
-- as stored; a document without a string thread_id (or with "", which no
-- saver stores) as "" (see dense.visit). The key expires after TTL_S.
function dense.add(key, keys)
  local ids = Search.json_mget(keys, '$.thread_id')
  for first, last in Core.batches(#keys, Core.BATCH) do
    local args = { 'ZADD', key }
    for i = first, last do
      args[#args + 1], args[#args + 2] = '0', type(ids[i]) == 'string' and ids[i] or ''
    end
    rcall(unpack(args))
  end
  rcall('EXPIRE', key, dense.TTL_S)
end

-- The anchor of a page boundary: a short digest of the key read last.
function dense.digest(key)
  return redis.sha1hex(key):sub(1, 16)
end

-- Collect the thread ids of dense segment [lo, hi) into `key`, a page at a
-- time, until all are in (true, pass.dense 'v') or the budget is spent
-- (false, pass.dense 'c<offset>.<anchor>': where the next call reads on). A
-- page costs what a count of the entries it reads (those it skips too) and
-- a grouping of those it returns cost. The index orders a segment by
-- document: one a writer adds or re-indexes (the saver's put_writes does)
-- comes last, and one deleted or re-indexed before the offset moves those
-- after it back, past the boundary. So each page is read from the entry
-- before its offset, which must be the anchor: when it is not, the entries
-- moved, and collecting starts again from the first (the key keeps what it
-- has) with the pass unfinished (its watermark stays: the next pass reads
-- the segment again). The server's search cap bounds the offset: entries
-- past it (cap + a page) are not collected, and the pass is unfinished (its
-- prunes shrink the segment for the next pass).
function dense.collect(sw, pass, lo, hi, key)
  local ctx, b = sw.ctx, sw.ctx.budget
  local count = dense.page_size(ctx)
  repeat
    if sw.moved and Sweep.spent(b) then
      return false
    end
    local offset, anchor = dense.collecting(pass.dense)
    offset = tonumber(offset) or 0
    if offset > ctx.cap then
      sw.unfinished, pass.dense = true, 'v'
      return true
    end
    local from = math.max(offset - 1, 0)
    local keys = dense.page(ctx, from, lo, hi, count + offset - from)
    b.work = b.work + 1 + math.floor((from + #keys) / SEGMENTS.ENTRIES_PER_UNIT) + #keys * Pass.GROUP_UNITS_PER_ENTRY
    sw.moved = true
    if offset > 0 and (keys[1] == nil or dense.digest(keys[1]) ~= anchor) then
      sw.unfinished, pass.dense = true, 'c' -- the entries moved under the boundary: from the first again
    else
      dense.add(key, keys)
      pass.dense = #keys < count + offset - from and 'v' or 'c' .. Pass.ms(from + #keys) .. '.' .. dense.digest(keys[#keys])
    end
  until pass.dense == 'v'
  return true
end

-- The key of the pass's notes of where its threads are (see Pass.placement).
function dense.notes_key(pass)
  return Keys.dense_key(pass.fp, Pass.ms(pass.start), 'placed')
end

-- Write the places this call read (sw.notes, unless placement found another
-- type there) to the pass's notes, which expire NOTES_TTL_S later (a lost
-- note is read again).
function dense.note(sw)
  local notes = sw.notes or {}
  for first, last in Core.batches(#notes / 2, Core.BATCH) do
    rcall('HSET', notes.key, unpack(notes, 2 * first - 1, 2 * last))
  end
  if #notes > 0 then
    rcall('EXPIRE', notes.key, dense.NOTES_TTL_S)
  end
  sw.notes = nil
end

-- Visit the threads collected in `key` after pass.after, in byte order, a
-- page at a time (see visit_next), placing them by the pass's notes (see
-- placement); true when all are visited. "" stands for the documents without
-- a thread id: skipped.
function dense.visit(sw, pass, lo, hi, key)
  sw.notes = { key = dense.notes_key(pass) }
  local ok, done = pcall(dense.visit_pages, sw, pass, lo, hi, key)
  dense.note(sw)
  if not ok then
    error(done, 0)
  end
  return done
end

-- (see visit)
function dense.visit_pages(sw, pass, lo, hi, key)
  local b = sw.ctx.budget
  local count = dense.page_size(sw.ctx)
  while true do
    local ids = rcall('ZRANGE', key, pass.after and '(' .. pass.after or '-', '+', 'BYLEX', 'LIMIT', '0',
      tostring(count))
    b.work = b.work + 1 + math.floor(#ids / SEGMENTS.ENTRIES_PER_UNIT)
    if #ids == 0 then
      return true
    end
    for _, id in ipairs(ids) do
      if id == '' then
        sw.out.threads_skipped, pass.after = sw.out.threads_skipped + 1, id
      elseif not Pass.visit_next(sw, pass, id, lo, hi) then
        return false
      end
    end
  end
end

-- Visit the threads of a segment holding more entries than one aggregate may
-- read: collect them into its key, visit them, then delete the key; false when
-- the call stops inside it (pass.dense, pass.after say where). A dry run
-- passes over it, and the pass is unfinished; so does a call that resumes in
-- it once its key is gone (evicted, expired, deleted): the segment waits for
-- the next pass.
function dense.segment(sw, pass, lo, hi)
  if sw.ctx.dry then
    sw.unfinished = true
    return true
  end
  local key = Keys.dense_key(pass.fp, Pass.ms(pass.start), Pass.ms(lo))
  if not pass.dense then
    local notes = dense.notes_key(pass)
    Delete.check_allowed('ZADD', { key }) -- (and EXPIRE: a key left without one would stay; UNLINK: once visited)
    Delete.check_allowed('EXPIRE', { key, notes })
    Delete.check_allowed('UNLINK', { key })
    Delete.check_allowed('HSET', { notes }) -- (and HGET: the notes are read)
    Delete.check_allowed('HGET', { notes })
    pass.dense, pass.after = 'c', nil -- (a segment that grew dense under way: from its first thread)
  elseif pass.dense ~= 'c' and rcall('EXISTS', key) == 0 then
    sw.unfinished = true
    return true
  end
  if pass.dense ~= 'v' and not dense.collect(sw, pass, lo, hi, key) then
    return false
  end
  if not dense.visit(sw, pass, lo, hi, key) then
    return false
  end
  rcall('UNLINK', key)
  return true
end

-- Visit the threads of segment [lo, hi) (n entries) after pass.after, but
-- not one visited elsewhere in the pass; false when the call stopped inside it
-- (pass.after: the last thread passed). A segment holding more entries than
-- a new one is narrowed to (segment_limit) is read in pages (see dense), so
-- no call groups it again; in a dry run, which cannot write, only one
-- holding more than one aggregate may read (segment_cap), and it is passed over.
function Pass.visit_segment(sw, pass, lo, hi, n)
  local ctx = sw.ctx
  if pass.dense or n > Pass.segment_cap(ctx) or (n > Pass.segment_limit(ctx) and not ctx.dry) then
    return dense.segment(sw, pass, lo, hi)
  elseif n == 0 then
    return true
  end
  local ids, nameless = Pass.ts_threads(sw.ctx, lo, hi, n)
  if pass.after == nil then
    sw.out.threads_skipped = sw.out.threads_skipped + nameless
  end
  for _, id in ipairs(ids) do
    if (pass.after == nil or Pass.before(pass.after, id)) and not Pass.visit_next(sw, pass, id, lo, hi) then
      return false
    end
  end
  return true
end

-- Read the next segment of window w and visit its threads (see segment,
-- visit_segment); true when the segment is done, and the pass moves past it.
function Pass.segment_step(sw, pass, w)
  local lo, hi, n, few = Pass.segment(sw, pass, w)
  if not lo or not Pass.visit_segment(sw, pass, lo, hi, n) then
    return false
  end
  pass.lo, pass.after, pass.dense, sw.moved = hi, nil, nil, true
  if few then
    pass.width = math.min(pass.width * 2, Pass.MAX_STAMP)
  end
  return true
end

-- Visit the segments of the pass's windows until it is done (true) or the
-- budget is spent (false: pass.lo, pass.width and pass.after say where). A
-- call stops once it has visited a thread or finished a segment.
function Pass.window_steps(sw, pass)
  local b = sw.ctx.budget
  sw.windows, sw.newest = Pass.windows(pass, sw.opts), {}
  for _, w in ipairs(sw.windows) do
    while math.max(pass.lo, w[1]) < w[2] do
      if sw.moved and Sweep.spent(b) then
        return false
      end
      local ok, finished = Core.guard(b, Pass.segment_step, sw, pass, w)
      if not (ok and finished) then
        return false
      end
    end
  end
  return true
end

-- Registered functions ---------------------------------------------------------------
-- The functions Redis runs, each with its contract, and their flags.
-- Provides: nothing
-- Assumes: BUILD, MAX_MANY, MIN_BUDGET, VERSION, WATERMARKS, Core.entry, Core.fail, Core.guard,
--   Core.keys_left, Core.parse_count, Core.parse_options, Core.policy, Core.show, Delete.check_allowed,
--   Keys.check_thread, Keys.context, Pass.ms, Pass.parse_cursor, Pass.pass_cursor, Pass.record_pass,
--   Pass.window_steps, Search.check_server, Search.require_index, Sweep.orphan_steps, Sweep.sweep_state,
--   Thread.add_counts, Thread.prune_thread, Thread.reply, Thread.zero_counts
-- Flags: lgprune_version is `no-writes` and `allow-stale` (it runs on
-- replicas, with FCALL_RO, at maxmemory and on a replica that lost its
-- primary). The pruning functions are `allow-oom`: their job is to free
-- memory, so they must run when it is full (they only ever delete; a plain
-- UNLINK runs there too). They are not `no-writes`, so a read-only replica
-- refuses them; their `_ro` twins are dry runs flagged `no-writes`, for
-- FCALL_RO and replicas. Every function that searches is `no-cluster`: a
-- cluster node refuses it at once (a script cannot search across shards).

local THREAD_OPTIONS = { DRY_RUN = 'flag', BUDGET = 'count', MAX_AGE = 'ms', IDLE_TTL = 'ms',
  CHECKPOINT_PREFIX = 'string', WRITE_PREFIX = 'string', LAYOUT = 'string' }
local SWEEP_OPTIONS = { DRY_RUN = 'flag', BUDGET = 'count', MAX_AGE = 'ms', IDLE_TTL = 'ms',
  ORPHANS = 'flag', GRACE = 'ms', DETAILS = 'flag', CHECKPOINT_PREFIX = 'string', WRITE_PREFIX = 'string',
  FULL = 'flag', MARGIN = 'ms', FULL_EVERY = 'ms', LAYOUT = 'string' }
local SWEEP_FIELDS = { 'cursor', 'kind', 'since', 'unfinished', 'layout', 'threads_visited', 'threads_pruned',
  'threads_deleted', 'threads_skipped', 'threads_failed', 'checkpoints_deleted', 'writes_deleted', 'keys_deleted',
  'orphans_deleted', 'blobs_deleted' }

-- The pruning functions, by name (each registered with its dry-run twin).
local pruners = {}

--[[
lgprune_version: the library version, and with BUILD which code this is.
  FCALL lgprune_version 0 [BUILD]
  Reply: the version, as `lgprune --version` prints it; with BUILD, [version, build]:
  build is "dev" for the file loaded as it is, else the hash the Python package set.
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
        [IDLE_TTL ms] [CHECKPOINT_PREFIX p] [WRITE_PREFIX p] [LAYOUT python|js]
  THREAD_ID  the id exactly as the application passes it, case-sensitive; "" is the empty thread.
  KEEP       checkpoints kept per namespace (a whole number, as every ms here); 0 deletes
             the whole thread, with whatever a crash left of it. A placeholder (writes
             stored before their checkpoint) never counts as kept.
  MAX_AGE    also keep every checkpoint younger than this (ms, by its uuid6 id).
  IDLE_TTL   delete the whole thread when its newest checkpoint is older than this (ms).
  BUDGET     keys one call may delete, default 2000, 10 to 100000 (more counts as
             100000); it also bounds what the call reads (How it works: Bounds).
  DRY_RUN    count what would go, delete nothing; BUDGET does not cap the counts. A
             thread over BUDGET + KEEP checkpoints is counted as far as one call lists:
             checkpoints_deleted is then a lower bound, checkpoints_kept an upper one.
  CHECKPOINT_PREFIX, WRITE_PREFIX   the saver's prefixes, also its index names (default
             "checkpoint", "checkpoint_write"); LAYOUT python only.
  LAYOUT     python (langgraph-checkpoint-redis) or js (@langchain/langgraph-checkpoint-redis
             1.0, indexes checkpoints, checkpoint_writes, checkpoint_blobs: a blob goes when no
             checkpoint left reads it). Default: js when only the js saver's index exists, else
             python.
  Reply: name/value pairs
    checkpoints_deleted   checkpoint documents deleted by this call
    writes_deleted        write documents deleted
    keys_deleted          every key deleted (with write registries and latest pointers)
    checkpoints_kept      the thread's checkpoints left (an upper bound while more is 1)
    delta_ancestors_kept  checkpoints beyond KEEP kept as DeltaChannel history
    blobs_deleted         js: channel-value blobs deleted (also in keys_deleted)
    more                  1 when the budget ran out: call again, with the same arguments
  Errors, and then nothing was deleted: BADARG (a bad argument or option, an id the index
  cannot match, a DeltaChannel history longer than BUDGET, writes under another
  WRITE_PREFIX), NOINDEX, NOMODULE, MIXED (both savers index these keys), NOPERM (the ACL
  refuses a command or key), BADDATA (stored data lgprune cannot read), PARTIAL (retry).
]]
function pruners.lgprune_thread(_, args)
  local opts = Core.parse_options(args, 3, THREAD_OPTIONS)
  local rule = Core.policy(args[2], opts)
  local ctx = Keys.context(opts)
  local thread = Keys.check_thread(args[1], ctx.layout)
  Search.check_server(ctx)
  return Thread.reply(Thread.prune_thread(ctx, thread, rule), 'more')
end

--[[
lgprune_many: lgprune_thread for several threads in one call, sharing one budget.
  FCALL lgprune_many 0 KEEP COUNT THREAD_ID... [options of lgprune_thread]
  COUNT      how many thread ids follow (1 to 1000).
  Reply: lgprune_thread's counts summed over the threads, then
    next    0 when every thread is done, else the 1-based position of the first thread
            still to prune: call again with the ids from there (it gets a whole BUDGET).
  Every id is checked before anything is deleted. A thread that needs more than the budget
  left, or fails, after an earlier one deleted something ends the call, `next` at it. Errors:
  as lgprune_thread's, and then nothing was deleted.
]]
function pruners.lgprune_many(_, args)
  local count = Core.parse_count('COUNT', args[2], 2 ^ 53)
  if count < 1 or count > MAX_MANY then
    Core.fail('BADARG', 'COUNT must be 1 to ' .. MAX_MANY .. ' thread ids, got ' .. count)
  end
  local opts = Core.parse_options(args, count + 3, THREAD_OPTIONS)
  local rule = Core.policy(args[1], opts)
  local ctx = Keys.context(opts)
  local threads = {}
  for i = 1, count do
    threads[i] = Keys.check_thread(args[i + 2], ctx.layout)
  end
  Search.check_server(ctx)
  local total = Thread.zero_counts()
  total.next = 0
  for i, thread in ipairs(threads) do
    if Core.keys_left(ctx.budget) < MIN_BUDGET then
      total.next = i
      break
    end
    local ok, out = Core.guard(ctx.budget, Thread.prune_thread, ctx, thread, rule)
    if not ok then
      total.next = i
      break
    end
    if out.more == 1 then
      out.checkpoints_kept = 0 -- counted by the call that finishes the thread
      Thread.add_counts(total, out)
      total.next = i
      break
    end
    Thread.add_counts(total, out)
  end
  return Thread.reply(total, 'next')
end

--[[
lgprune_sweep: prune every thread, or those changed since the last pass, a slice per call.
  FCALL lgprune_sweep 0 CURSOR KEEP [DRY_RUN] [BUDGET n] [MAX_AGE ms] [IDLE_TTL ms]
        [ORPHANS] [GRACE ms] [DETAILS] [FULL] [MARGIN ms] [FULL_EVERY ms]
        [CHECKPOINT_PREFIX p] [WRITE_PREFIX p] [LAYOUT python|js]
  CURSOR     "0" to begin a pass, then the last reply's cursor, with the same KEEP and
             options, until the reply's cursor is "0". Not signed: a forged one can make a
             pass skip work, as its caller could by deleting keys or watermarks; one of other
             options, or that would loop or skip what its pass has not read, is refused.
  KEEP, MAX_AGE, IDLE_TTL, DRY_RUN, prefixes, LAYOUT: as for lgprune_thread, per thread.
  BUDGET     work per call, default 2000 (10 to 100000): a deleted key counts 1, and
             finding and visiting threads count too (How it works: What a sweep call costs).
  FULL       make this pass full. FULL_EVERY ms: make it full when the rule's last full
             pass began longer ago (no default here; the Python and npm packages pass 7 days).
  MARGIN     ms an incremental pass reads before its watermark, for writers' clock skew
             and put latency (default 600000).
  ORPHANS    LAYOUT python only: a full pass, then a SCAN of every key deleting placeholders,
             and writes, write registries and latest pointers whose checkpoint is gone or a
             placeholder, once that checkpoint id is older than GRACE (ms, default 600000).
  DETAILS    add `threads`, per visited thread [thread_id, checkpoints, checkpoints_deleted,
             keys_deleted, exact]: exact 0 for a thread larger than one call lists (about
             BUDGET + KEEP checkpoints), the count then an upper bound. With FULL (as
             `lgprune stats`), every thread.
  Passes: threads are found through the checkpoint index by checkpoint_ts (the writer's
  clock, ms). A pass is incremental once one of the same rule (KEEP, MAX_AGE, IDLE_TTL,
  prefixes, MARGIN, LAYOUT) has completed: it reads checkpoint_ts from that pass's start less
  MARGIN, and per age rule those that crossed that age since. It is full (every checkpoint_ts)
  with FULL or ORPHANS, without a watermark, or when FULL_EVERY is due. Only a full pass finds
  a checkpoint stamped over MARGIN late; no pass finds a thread with no checkpoint_ts at all.
  Watermarks: hash lgprune:watermarks, field the rule (JSON), value the server time (ms) its
  last complete pass began; field "full <rule>", its last full pass. A completed pass records
  them, unless a dry run or unfinished. Deleting the key or a field only makes a pass full.
  Dense milliseconds: one holding more checkpoints than a call reads at once (a bulk import, a
  coarse clock) is read in pages over several calls into lgprune:dense:<fp>:<start>:<ms>, a sorted
  set of its thread ids that expires after a day; then its threads are visited and the key deleted
  (where each is visited is noted for the pass in lgprune:dense:<fp>:<start>:placed, which expires
  ten minutes after the last call that wrote to it). The pass is left unfinished when a writer
  deletes or re-indexes one of its checkpoints already read (the rest move under a page's
  boundary), when the key is gone as a call resumes, or past the search result cap
  (MAXSEARCHRESULTS) plus a page. A dry run writes no key: it passes over a millisecond of over
  4000 checkpoints (fewer if the server caps results lower), unfinished.
  Reply: name/value pairs
    cursor           "0" when the pass is done, else pass it to the next call
    kind             "full" or "incremental"
    since            incremental: the checkpoint_ts it reads from (watermark less MARGIN); full: 0
    unfinished       1 when the pass passed over a thread or dense millisecond it could not
                     finish: it records no watermark (the next pass reads that part again)
    layout           "python" or "js": whose keys it pruned
    threads_visited  threads passed (once over several calls; a thread without a latest
                     pointer, as every js thread, once per segment holding its checkpoints)
    threads_pruned   visits that deleted something
    threads_deleted  threads deleted whole as idle (IDLE_TTL)
    threads_skipped  checkpoints the index grouped without a thread id it can return
    threads_failed   threads that could not be pruned (a key of another type, an unreadable
                     document, a DeltaChannel history over BUDGET): nothing of them deleted,
                     the pass completes without them
    checkpoints_deleted, writes_deleted, keys_deleted, blobs_deleted: as for lgprune_thread
    orphans_deleted  orphan keys deleted (also in keys_deleted)
    failed           [thread_id, "<CODE> <why>"] per failed thread, the first 100 of a call
    threads          with DETAILS only, last
  Errors, only what stops every thread, and then nothing was deleted: BADARG (bad arguments,
  a refused CURSOR, ORPHANS under LAYOUT js), NOINDEX (no checkpoint index: a sweep that
  finds no thread found none there), NOMODULE, MIXED, NOPERM, PARTIAL (retry).
]]
function pruners.lgprune_sweep(_, args)
  local cursor = args[1]
  if type(cursor) ~= 'string' then
    Core.fail('BADARG', 'CURSOR must be "0" or a cursor returned by lgprune_sweep, got ' .. Core.show(cursor))
  end
  local opts = Core.parse_options(args, 3, SWEEP_OPTIONS)
  local rule = Core.policy(args[2], opts)
  local ctx = Keys.context(opts)
  ctx.sweep, ctx.details = true, opts.DETAILS == true
  if opts.ORPHANS and not ctx.layout.pointers then
    Core.fail('BADARG', 'ORPHANS is for LAYOUT python: to delete a js thread\'s leftovers, prune it with KEEP 0')
  end
  local pass = Pass.parse_cursor(cursor, ctx, rule, opts)
  Search.check_server(ctx)
  Search.require_index(ctx)
  if not ctx.dry then -- a pass ends by recording its watermark: known before any delete
    Delete.check_allowed('HSET', { WATERMARKS })
  end
  local sw = Sweep.sweep_state(ctx, rule, opts)
  sw.unfinished = pass.unfinished
  local done = pass.scan ~= nil or Pass.window_steps(sw, pass)
  if done and opts.ORPHANS then
    pass.scan, done = Sweep.orphan_steps(sw, pass.scan or '0')
  end
  local out = sw.out
  sw.orphans.flush()
  pass.unfinished = sw.unfinished
  if done then
    Pass.record_pass(pass, ctx.dry)
  end
  out.orphans_deleted = sw.orphans.deleted
  out.keys_deleted = out.keys_deleted + sw.orphans.deleted
  out.cursor, out.kind, out.unfinished = Pass.pass_cursor(pass, done), pass.kind, pass.unfinished and 1 or 0
  out.since = pass.since and Pass.ms(pass.since) or '0'
  out.layout = ctx.layout.name
  local r = Thread.reply(out, nil, SWEEP_FIELDS)
  r[#r + 1] = 'failed'
  r[#r + 1] = sw.failed
  if opts.DETAILS then
    r[#r + 1] = 'threads'
    r[#r + 1] = sw.details
  end
  return r
end

--[[
lgprune_thread_ro, lgprune_many_ro, lgprune_sweep_ro: the same calls as dry runs
(DRY_RUN implied), flagged no-writes: for FCALL_RO and replicas.
  FCALL_RO lgprune_thread_ro 0 THREAD_ID KEEP [options of lgprune_thread]
  FCALL_RO lgprune_many_ro 0 KEEP COUNT THREAD_ID... [options]
  FCALL_RO lgprune_sweep_ro 0 CURSOR KEEP [options of lgprune_sweep]
  Reply and errors: as the function's own. A sweep's cursor continues only with the
  function that returned it; as any dry run, a sweep passes over a dense millisecond.
]]
local function read_only(body)
  return function(keys, args)
    args[#args + 1] = 'DRY_RUN'
    return body(keys, args)
  end
end

-- Register pruning function `name` and its dry-run twin.
local function register(name)
  redis.register_function { function_name = name, callback = Core.entry(pruners[name]),
    flags = { 'allow-oom', 'no-cluster' } }
  redis.register_function { function_name = name .. '_ro', callback = Core.entry(read_only(pruners[name])),
    flags = { 'no-writes', 'no-cluster' } }
end

redis.register_function { function_name = 'lgprune_version', callback = lgprune_version,
  flags = { 'no-writes', 'allow-stale' } }
register('lgprune_thread')
register('lgprune_many')
register('lgprune_sweep')
