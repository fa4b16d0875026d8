
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
