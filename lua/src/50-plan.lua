
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
