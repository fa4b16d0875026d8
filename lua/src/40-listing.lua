
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
