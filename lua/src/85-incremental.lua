
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
