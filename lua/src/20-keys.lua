
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
