
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
