
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
  Reply: bulk string, the version (as `lgprune --version` prints it); with
  BUILD, [version, build]: build is "dev" for the file loaded as it is, else
  the hash the Python package set.
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
  THREAD_ID  the thread id exactly as the application passes it ("" is the
             saver's empty thread); matched case-sensitively.
  KEEP       checkpoints to keep per namespace, a non-negative integer
             (0 deletes the thread, with the writes, registries and
             placeholders a crash left of it, whatever their age). A
             placeholder is never counted as a kept checkpoint.
  DRY_RUN    plan and count, delete nothing (BUDGET does not cap the count of
             what the listing shows; a thread larger than one call's listing,
             BUDGET + KEEP checkpoints, is counted as far as that listing goes:
             a lower bound, with checkpoints_kept an upper bound).
  BUDGET     keys deleted per call, default 2000 (10 to 100000). A call also
             lists at most BUDGET + KEEP checkpoints of the root namespace and
             as many of the others, reads at most 2 * BUDGET write entries and
             walks at most BUDGET delta ancestors from a kept checkpoint.
  MAX_AGE    also keep every checkpoint younger than this many milliseconds
             (by its uuid6 id): only older ones beyond KEEP go.
  IDLE_TTL   delete the whole thread when its newest checkpoint is older than
             this many milliseconds.
  CHECKPOINT_PREFIX / WRITE_PREFIX
             the saver's checkpoint_prefix / checkpoint_write_prefix
             (defaults "checkpoint" / "checkpoint_write"); the index names.
  LAYOUT     whose keys: python (langgraph-checkpoint-redis) or js
             (LangGraph.js's @langchain/langgraph-checkpoint-redis 1.0: fixed
             prefixes, indexes checkpoints/checkpoint_writes/checkpoint_blobs;
             its channel-value blobs go when no checkpoint left reads them).
             Default: js when only its index exists, else python. A store where
             both savers' indexes cover <cp>:* is refused (MIXED).
  Reply: flat list of name/value pairs:
    checkpoints_deleted   checkpoint documents deleted by this call
    writes_deleted        write documents deleted
    keys_deleted          all keys deleted (with registry zsets, latest pointers)
    checkpoints_kept      the thread's checkpoints left (an upper bound while more is 1)
    delta_ancestors_kept  checkpoints beyond KEEP kept for DeltaChannel history
    blobs_deleted         js: channel-value blobs deleted (also in keys_deleted)
    more                  1 when the budget ran out: call again
  Errors, and then nothing was deleted: "LGPRUNE <CODE> ..." for a bad KEEP
  or option, a thread id the index cannot match, a DeltaChannel history
  longer than BUDGET, a missing index, a server without the modules, a store
  both savers index (MIXED), a command or key the ACL refuses (NOPERM), stored
  data lgprune cannot read, such as a key of another type (BADDATA). Every
  error is "LGPRUNE <CODE> ...".
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
  Reply: the counts of lgprune_thread summed over the threads, with
    next    0 when every thread is done, else the 1-based position of the
            first thread still to prune: call again with the ids from there.
  Every id is checked before anything is deleted. A thread that cannot be
  pruned within what is left of the budget (or fails) after an earlier one
  deleted something ends the call there, with `next` at it: the next call
  starts with it and a whole BUDGET. Errors: as lgprune_thread's, and then
  nothing was deleted.
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
lgprune_sweep: prune every thread, or the threads changed since the last sweep, a slice per call.
  FCALL lgprune_sweep 0 CURSOR KEEP [DRY_RUN] [BUDGET n] [MAX_AGE ms] [IDLE_TTL ms]
        [ORPHANS] [GRACE ms] [DETAILS] [FULL] [MARGIN ms] [FULL_EVERY ms]
        [CHECKPOINT_PREFIX p] [WRITE_PREFIX p] [LAYOUT python|js]
  CURSOR     "0" to start a pass, then the cursor the previous call returned
             (text: "i:<fp>:<start>:<since>:<lo>:<width>:<u>:<dense>:..." an
             incremental pass, "j:..." a full one, "o:..." a full one's orphans
             phase; each continues only with the same rule and options, and a
             cursor that would skip what its pass has not read is refused).
  KEEP, MAX_AGE, IDLE_TTL, prefixes, LAYOUT, DRY_RUN: as for lgprune_thread, per thread.
  Threads are found through the checkpoint index by checkpoint_ts (the
  writer's clock, ms): FT.AGGREGATE GROUPBY thread_id over time segments of
  at most BUDGET / 20 entries (50 at least, 4000 at most), sized by counts. A
  millisecond holding more (a bulk import, a coarse clock) is read in pages of
  FT.SEARCH across calls into lgprune:dense:<fp>:<start>:<ms>, a sorted set of
  its thread ids that expires after a day; its threads are then visited from
  there, in byte order, and the key is deleted. The pass is left unfinished
  (its watermark stays) when the millisecond's entries moved under a page's
  boundary (a writer added, deleted or re-indexed one of its documents), when
  its key is gone as a call resumes (evicted, expired, deleted), or when it
  holds more entries than the server's search result cap (MAXSEARCHRESULTS)
  plus a page; and in a dry run, which writes nothing and groups such a
  millisecond again in each call that resumes in it, when it holds more than
  one aggregate may read (4000, or the search result cap less 1). A thread
  is visited from the segment holding its newest root checkpoint (one without
  a root pointer from each segment holding its checkpoints). A pass is
  incremental when a pass of the same rule (KEEP, MAX_AGE, IDLE_TTL,
  prefixes, MARGIN) completed before: it reads only the checkpoint_ts at or
  after that pass's start less MARGIN and, per age rule, those that crossed
  that age since. A pass is full (every
  checkpoint_ts there can be) with FULL or ORPHANS, without such a watermark,
  or when the rule's last full pass began more than FULL_EVERY ms ago. A
  checkpoint stamped more than MARGIN behind is found by a full pass only; one
  without checkpoint_ts (no supported saver writes one) goes with its thread
  when another checkpoint finds it, and a thread with none stamped is found
  by no pass.
  MARGIN     ms the incremental window reaches before the watermark, for
             writers' clock skew and put latency (default 600000).
  Watermarks: hash lgprune:watermarks, field = the rule (JSON), value = the
  server time (ms) at which its last complete pass began; field "full <rule>"
  for its last full pass. A pass records them when it completes, unless it
  is a dry run or passed over a thread (or a dense millisecond) it could not
  finish.
  BUDGET     work per call, default 2000: a deleted key counts 1 (in a dry
             run, one that would go), a thread visit 10 (50 when it lists the
             thread), an orphan check or a read of a thread's newest root
             checkpoint 5, a SCAN step of the orphans phase 7 (50 keys), a
             count of a time segment 1 and 1 per 20 entries (it reads at most
             BUDGET / 20 + 1, or 4001 for a dense millisecond), grouping it by
             thread 2 per entry; a page of a dense millisecond (3 BUDGET / 8
             entries, 50 at least) as much as counting the entries it reads
             (those before its offset too) and grouping those it returns, and
             each read of its collected threads 1 and 1 per 20. A call stops
             once it is spent: after the last thread it visited (the cursor
             carries the segment and that thread), after the count that spent
             it (the cursor carries the narrowed segment), or after a page of
             a dense millisecond (the cursor carries the offset of the next);
             the orphans phase at the end of a SCAN step, or
             inside one once the orphans found reach BUDGET (the next call reads
             that step again). A thread that fails after the call deleted
             something also ends the call there, to be met first by the next one.
  ORPHANS    a full pass, then an orphans phase: SCAN over every key (it finds
             no thread) deletes writes, write registries and latest pointers
             whose checkpoint is gone, and placeholders (what the saver's
             put_writes stores for a checkpoint not stored yet), when that
             checkpoint's id is older than GRACE (ms, default 600000: writes
             can be stored before their checkpoint). A write or registry whose
             checkpoint is a placeholder counts as one whose checkpoint is gone.
  DETAILS    add `threads`: per visited thread, [thread_id, checkpoints,
             checkpoints_deleted, keys_deleted, exact]: every thread is listed
             and its own checkpoints counted (exact 1), except one too large
             for a call's listing (BUDGET + KEEP checkpoints), whose count is
             an upper bound (exact 0). For `lgprune stats` (with FULL).
  Threads already within KEEP cost one index count. Thread ids the index
  cannot match are skipped. A thread that cannot be pruned (a key of another
  type, a document lgprune cannot read, a DeltaChannel history longer than
  BUDGET, a write prefix that is not WRITE_PREFIX) is named in `failed`,
  nothing of it is deleted, and the pass goes on and completes without it
  (the next full pass meets it again). ORPHANS is for LAYOUT python.
  Reply: name/value pairs:
    cursor               "0" when the pass is complete, else pass it back
    kind                 "full" or "incremental"
    since                an incremental pass: the checkpoint_ts it reads from (the
                         watermark less MARGIN, ms), else 0
    unfinished           1 when the pass passed over a thread it could not finish, or (a
                         dry run, past the search result cap, entries moved under a page's
                         boundary, its key gone) a millisecond holding more entries than
                         one aggregate may read: it records no watermark
    layout               "python" or "js": whose keys it pruned
    threads_visited      threads the calls moved past (a thread pruned over several
                         calls counts once; one without a root pointer may count
                         once per segment holding its checkpoints)
    threads_pruned       visits that deleted something
    threads_deleted      threads deleted whole as idle (IDLE_TTL)
    threads_skipped      checkpoint documents the index grouped without a thread id
                         (none, or one it cannot return): nothing to prune them by
    threads_failed       threads that could not be pruned (counted as visits are), an
                         id lgprune cannot prune by among them (BADDATA)
    checkpoints_deleted, writes_deleted, keys_deleted   as for lgprune_thread
    orphans_deleted      orphan keys deleted (also in keys_deleted)
    blobs_deleted        js: channel-value blobs deleted (also in keys_deleted)
    failed               [thread_id, "<CODE> <why>"] for each thread that could not be
                         pruned (the first 100 of a call; threads_failed counts all)
    threads              with DETAILS only, last: the list described above
  A cursor is not signed: a user who may FCALL can forge one that skips
  work (as they may delete keys themselves); one that would loop or read
  past its pass's windows is refused.
  Errors: bad arguments, a CURSOR of another rule or options, ORPHANS under
  LAYOUT js, NOINDEX when the checkpoint index does not exist (a sweep that
  finds no thread found none there), NOMODULE, MIXED and NOPERM: only what
  stops every thread; then nothing was deleted.
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
lgprune_thread_ro, lgprune_many_ro, lgprune_sweep_ro: the same calls as a dry
run (DRY_RUN implied), flagged no-writes: for FCALL_RO, and for a replica.
  FCALL_RO lgprune_thread_ro 0 THREAD_ID KEEP [options of lgprune_thread]
  FCALL_RO lgprune_many_ro 0 KEEP COUNT THREAD_ID... [options]
  FCALL_RO lgprune_sweep_ro 0 CURSOR KEEP [options of lgprune_sweep]
  Reply and errors: as the function's own. A sweep's cursor continues only
  with the function that returned it. Like any dry run, a sweep passes over
  a millisecond holding more entries than one aggregate may read (it would
  have to collect its threads in a key): the pass is unfinished.
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
