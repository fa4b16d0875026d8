
-- Sweeps and orphans -------------------------------------------------------------
-- Provides: the orphan checks (orphan_pointer, orphan_write, orphan_registry,
-- orphan_placeholder) and a sweep's parts: sweep_state, spent, visit and
-- counted (one thread, for either kind of pass), sweep_steps (a full pass:
-- threads found by SCAN over the latest pointers).
-- Assumes: everything above. A sweep charges its budget's `work` for what is
-- not a delete; a call stops once keys + work reach BUDGET.

local SCAN_COUNT = 50 -- keys per SCAN step of a sweep that checks every key (ORPHANS)
local POINTER_SCAN_COUNT = 200 -- ... and of one that MATCHes latest pointers only
local SCAN_KEYS_PER_UNIT = 8 -- a SCAN step costs 1 budget unit per this many keys it examines
local VISIT_COST = 10 -- budget units a sweep charges per thread visit
local LIST_COST = 40 -- ... and more when the visit lists and plans the thread
local CHECK_COST = 3 -- ... per orphan check

-- Orphan checks, each true for a key of this saver whose checkpoint is gone
-- and whose checkpoint id dates from before `before` (ms).
-- A latest pointer: its target checkpoint is gone.
local function orphan_pointer(ctx, key, before)
  local target = read_pointer(key)
  if not target or not starts_with(target, ctx.cp .. ':') then
    return false
  end
  return rcall('EXISTS', target) == 0 and older(target:match(':([^:]*)$'), before)
end

-- A write: the checkpoint named by its own fields is gone (missing or a placeholder).
local function orphan_write(ctx, key, before)
  local t, ns, id = identity(key)
  if not (t and ns and id) then
    return false
  end
  local thread, d = { id = t }, { ns = ns, id = id }
  if not starts_with(key, write_prefix(ctx, thread, d)) then
    return false -- not stored where the saver would store it: not ours to judge
  end
  return older(id, before) and checkpoint_gone(checkpoint_key(ctx, thread, ns, id))
end

-- A write registry: write_keys_zset:<stem> lists writes <wp>:<stem>:..., and
-- the checkpoint <cp>:<stem> is gone (missing or a placeholder). (Registries
-- of other prefixes list other write keys and are left alone.)
local function orphan_registry(ctx, key, before)
  local checkpoint, writes = registry_owner(ctx, key)
  local ok, first = pcall(rcall, 'ZRANGE', key, 0, 0)
  if not ok or type(first[1]) ~= 'string' or not starts_with(first[1], writes) then
    return false
  end
  return older(key:match(':([^:]*)$'), before) and checkpoint_gone(checkpoint)
end

-- A placeholder (see is_placeholder) under the checkpoint prefix: its writes
-- never got their checkpoint.
local function orphan_placeholder(ctx, key, before)
  return starts_with(key, ctx.cp .. ':') and older(key:match(':([^:]*)$'), before) and is_placeholder(key)
end

-- A sweep call's state: the counts of its reply (`out`), the visits of the
-- SCAN step under way (`step`: counted into `out` once the step is finished,
-- so a step read again by the next call counts its threads once), the
-- threads it saw, per-thread details, the orphans found; the budget is
-- ctx.budget.
local function sweep_state(ctx, rule, opts)
  return {
    ctx = ctx, rule = rule, opts = opts,
    before = now_ms() - (opts.GRACE or DEFAULT_GRACE_MS),
    out = { threads_visited = 0, threads_pruned = 0, threads_deleted = 0, threads_skipped = 0,
      checkpoints_deleted = 0, writes_deleted = 0, keys_deleted = 0, orphans_deleted = 0, blobs_deleted = 0 },
    step = { threads_visited = 0, threads_skipped = 0 },
    seen = {}, details = {}, orphans = sink(ctx.budget), unfinished = false,
  }
end

-- Collect orphan `key`, to be deleted as the call ends, once the ACL is known
-- to let it go (else the call fails here: under guard, after a delete, that
-- ends the call and the next one fails before its first delete).
local function add_orphan(sw, key)
  check_deletable(sw.ctx.budget, { { pending = { key } } })
  sw.orphans.add(key)
end

-- Whether the sweep's budget is spent: keys deleted and work reach BUDGET.
local function spent(b)
  return b.keys + b.work >= b.total
end

-- The thread ids that the latest pointers among `keys` name: each pointer's
-- checkpoint's own thread_id, read with JSON.MGET for a whole SCAN step (not
-- MGET for the pointers: the README's ACL has no +mget). Maps a pointer key
-- to its id; a pointer whose value is not a string naming a JSON document
-- under the checkpoint prefix (as the saver's always do) with a string
-- thread_id is left out, so no other key is ever read.
local function pointer_threads(ctx, keys)
  local latest, checkpoints, pointers, targets, ids = latest_start(ctx), ctx.cp .. ':', {}, {}, {}
  for _, key in ipairs(keys) do
    local target = starts_with(key, latest) and read_pointer(key)
    if target and starts_with(target, checkpoints) then
      pointers[#pointers + 1] = key
      targets[#targets + 1] = target
    end
  end
  local values = json_mget(targets, '$.thread_id')
  for i, key in ipairs(pointers) do
    if type(values[i]) == 'string' then
      ids[key] = values[i]
    end
  end
  return ids
end

-- Count one visit's result into the sweep.
local function count_visit(sw, id, done)
  local out = sw.out
  if sw.opts.DETAILS then
    sw.details[#sw.details + 1] = { id, done.checkpoints_kept + done.checkpoints_deleted,
      done.checkpoints_deleted, done.keys_deleted, done.count_exact and 1 or 0 }
  end
  add_counts(out, done)
  if done.listed then
    sw.ctx.budget.work = sw.ctx.budget.work + LIST_COST
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

-- Prune thread `id` (as stored: the layout's empty_id is thread "") under the sweep's rule.
-- False when the call must stop before it (its budget is spent and it deleted
-- something, or the thread failed after a delete: the next call meets it
-- first); else true and its counts (nil when the index cannot match the id).
local function visit(sw, id)
  local ctx, b = sw.ctx, sw.ctx.budget
  if keys_left(b) < MIN_BUDGET or (b.keys > 0 and spent(b)) then
    return false
  end
  local layout = ctx.layout
  local thread, done = thread_record(id == layout.empty_id and '' or id, layout), nil
  if thread then
    local ok
    ok, done = guard(b, prune_thread, ctx, thread, sw.rule)
    if not ok then
      return false
    end
  end
  sw.seen[id] = true
  b.work = b.work + VISIT_COST
  return true, done
end

-- Count a visit (`done`: its counts, nil when skipped) into the sweep, its
-- visit into `counts` (the sweep's, or the step's). Whether to go on past the
-- thread: false to come back to it, when this call got somewhere with it and
-- it has more. A thread left with more and no progress is passed over, and
-- then the pass is not complete (`sw.unfinished`: no watermark).
local function counted(sw, counts, id, done)
  counts.threads_visited = counts.threads_visited + 1
  if not done then
    counts.threads_skipped = counts.threads_skipped + 1
    return true
  end
  count_visit(sw, id, done)
  local dry = sw.ctx.dry
  if done.more == 1 and not dry and done.keys_deleted == 0 then
    sw.unfinished = true
  end
  return done.more == 0 or dry or done.keys_deleted == 0
end

-- Prune thread `id`, which latest pointer `key` names (or, when it names
-- none, judge the pointer an orphan); false when the call must stop before it.
local function sweep_pointer(sw, key, id)
  local ctx = sw.ctx
  if not id then
    ctx.budget.work = ctx.budget.work + CHECK_COST
    if sw.opts.ORPHANS and orphan_pointer(ctx, key, sw.before) then
      add_orphan(sw, key)
    end
    return true
  end
  local root = latest_key(ctx, { id = id }, ctx.root)
  if sw.seen[id] or (key ~= root and rcall('EXISTS', root) == 1) then
    return true -- a thread is visited once, from its root namespace's pointer when it has one
  end
  local go, done = visit(sw, id)
  if not go then
    return false
  end
  -- counted with the step, unless no later call can meet the thread again (it had no
  -- root pointer, or this visit deleted it: it was deleted whole)
  local gone = key ~= root or (done and done.keys_deleted > 0 and not ctx.dry and rcall('EXISTS', root) == 0)
  local counts = gone and sw.out or sw.step
  return counted(sw, counts, id, done)
end

-- Judge a write, registry or placeholder key an orphan (ORPHANS).
local function sweep_orphan(sw, key)
  local ctx = sw.ctx
  local check
  if starts_with(key, ctx.wp .. ':') then
    check = orphan_write
  elseif starts_with(key, ZSET_PREFIX .. ':') then
    check = orphan_registry
  elseif starts_with(key, ctx.cp .. ':') then
    check = orphan_placeholder
  end
  if check then
    ctx.budget.work = ctx.budget.work + CHECK_COST
    if check(ctx, key, sw.before) then
      add_orphan(sw, key)
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

-- SCAN from `cursor` and visit steps until the sweep is done or the budget is
-- spent. Returns the cursor to resume from ("00" when the call stopped inside
-- the first step: SCAN reads it as 0, the caller as not done).
local function sweep_steps(sw, cursor)
  local b = sw.ctx.budget
  local count = sw.opts.ORPHANS and SCAN_COUNT or POINTER_SCAN_COUNT
  local scan = { 'SCAN', cursor, 'COUNT', count }
  if not sw.opts.ORPHANS then
    scan = { 'SCAN', cursor, 'MATCH', glob_escape(latest_start(sw.ctx)) .. '*', 'COUNT', count }
  end
  local step_cost = math.ceil(count / SCAN_KEYS_PER_UNIT)
  while true do
    scan[2] = cursor
    local res = rcall(unpack(scan))
    local ok, finished = guard(b, sweep_keys, sw, res[2]) -- finished: the step was visited whole
    finished = ok and finished
    b.work = b.work + step_cost
    if not finished then
      return cursor == '0' and '00' or cursor
    end
    for name, n in pairs(sw.step) do
      sw.out[name] = sw.out[name] + n
      sw.step[name] = 0
    end
    cursor = res[1]
    if cursor == '0' or spent(b) then
      return cursor
    end
  end
end
