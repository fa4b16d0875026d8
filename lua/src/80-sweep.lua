
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
