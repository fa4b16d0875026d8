
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
