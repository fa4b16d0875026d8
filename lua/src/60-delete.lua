
-- Deleting ----------------------------------------------------------------------
-- A plan's checkpoints deleted with their writes, registries and latest pointers, and its leftovers
-- and blobs, within the budget, once the ACL lets them all go. Every key found is confirmed
-- (`owns`); every search and read of a thread runs before its first delete: keys are collected in
-- sinks and flushed at the end.
-- Provides: check_allowed, check_write_prefix, delete_doomed, leftovers, sink, stranded_write
-- Assumes: rcall, Core.BATCH, Core.batches, Core.fail, Core.keys_left, Core.reads_left, Core.show,
--   Keys.checkpoint_key, Keys.id_param, Keys.latest_key, Keys.older, Keys.registry_key, Keys.starts_with,
--   Keys.write_prefix, Listing.registered_writes, Search.checkpoint_gone, Search.identity, Search.search
local Delete = {}

Delete.WRITES_CHUNK = 64 -- checkpoint ids per writes query
Delete.ACL_USE = { UNLINK = 'delete', HSET = 'write to', HGET = 'read', -- (see check_allowed)
  ZADD = 'collect the threads of a dense millisecond in', EXPIRE = 'set the expiry of' }

-- Whether write key `key`, found by a writes query on the thread's tag and
-- starting with d's write prefix `<wp>:<thread>:<ns>:<id>:` (`prefix_len`
-- bytes), belongs to doomed checkpoint `d` of `thread` (`plain`: see write_owners).
--
-- The saver makes every write key `<wp>:<thread>:<ns>:<id>:<task>:<idx>` with
-- an integer idx, but any part may hold colons, so the key is proof only when
-- d is plain and the rest is `<task>:<idx>` with a
-- colon-free task. Then the true owner's prefix cannot be longer (it would
-- take the one colon its own task and idx need), nor shorter: ending at a
-- colon inside d's prefix, it would leave our thread's ns and id, which have
-- none, too few colons, or belong to a thread cut short at one of our
-- thread's colons, whose tag cannot match ours (no commas or NUL in ours, and
-- a case-folded prefix is shorter). Otherwise the key counts when the saver
-- listed it in d's registry zset, or the write's own fields name d exactly.
function Delete.owns(thread, d, key, prefix_len, plain)
  if plain and key:find('^[^:]*:%-?%d+$', prefix_len + 1) then
    return true
  end
  if rcall('ZSCORE', Keys.registry_key(thread, d), key) then
    return true
  end
  local t, ns, id = Search.identity(key)
  return t == thread.id and ns == d.ns and id == d.id
end

-- The doomed checkpoints by the start of their write keys: `prefix` maps
-- write_prefix(d) to d, `lengths` lists the lengths those prefixes have
-- (usually one: root namespace, uuid ids), `plain[d]` whether d's write keys
-- can prove their owner by their form (see owns).
function Delete.write_owners(ctx, thread, doomed)
  local owners, seen = { prefix = {}, lengths = {}, plain = {} }, {}
  for _, d in ipairs(doomed) do
    local prefix = Keys.write_prefix(ctx, thread, d)
    owners.prefix[prefix] = d
    owners.plain[d] = thread.plain and not d.ns:find(':', 1, true) and not d.id:find(':', 1, true)
    if not seen[#prefix] then
      seen[#prefix] = true
      owners.lengths[#owners.lengths + 1] = #prefix
    end
  end
  return owners
end

-- Sort write keys from a writes-index answer to the doomed checkpoint each
-- belongs to (see write_owners): a key counts when it starts with a doomed
-- checkpoint's write prefix, ending at a colon, and `owns` confirms it.
-- found[d.id] lists d's keys.
function Delete.match_writes(res, thread, owners, found)
  local lengths, prefix = owners.lengths, owners.prefix -- locals: this runs once per write
  for i = 2, #res do
    local key = res[i]
    for j = 1, #lengths do
      local len = lengths[j]
      local d = key:byte(len) == 58 and prefix[key:sub(1, len)] -- 58: ':'
      if d and Delete.owns(thread, d, key, len, owners.plain[d]) then
        local list = found[d.id]
        if not list then
          list = {}
          found[d.id] = list
        end
        list[#list + 1] = key
        break
      end
    end
  end
end

-- Collects keys to delete; flush() deletes them in batches (or, in a dry run,
-- counts those that exist), charging the budget. Nothing is deleted before
-- flush(), so every search of a thread runs before its first delete.
function Delete.sink(b)
  local self = { pending = {}, deleted = 0 }
  function self.flush()
    local p = self.pending
    for first, last in Core.batches(#p, Core.BATCH) do
      if b.dry then
        self.deleted = self.deleted + rcall('EXISTS', unpack(p, first, last))
      else
        local n = rcall('UNLINK', unpack(p, first, last))
        self.deleted = self.deleted + n
        b.keys = b.keys + n
      end
    end
    self.pending = {}
  end
  function self.add(key)
    self.pending[#self.pending + 1] = key
  end
  return self
end

-- Fail (NOPERM) unless this user may run `command` on each of `keys`, as in
-- ACL_USE (checked before the first delete: an ACL that lets the user read a
-- key but not change it then fails the call, having deleted nothing).
function Delete.check_allowed(command, keys)
  for first, last in Core.batches(#keys, Core.BATCH) do
    if not redis.acl_check_cmd(command, unpack(keys, first, last)) then
      local refused = keys[first]
      for i = first, last do -- (one check for many: each costs a few microseconds whatever it holds)
        refused = redis.acl_check_cmd(command, keys[i]) and refused or keys[i]
      end
      Core.fail('NOPERM', 'this user may not ' .. Delete.ACL_USE[command] .. ' ' .. Core.show(refused)
        .. ', which it must: grant it '
        .. 'the keys in the README\'s ACL; nothing was deleted')
    end
  end
end

-- check_allowed for every key pending in `sinks` (not in a dry run).
function Delete.check_deletable(b, sinks)
  if b.dry then
    return
  end
  local keys = {}
  for _, s in ipairs(sinks) do
    for _, key in ipairs(s.pending) do
      keys[#keys + 1] = key
    end
  end
  Delete.check_allowed('UNLINK', keys)
end

-- The first doomed checkpoints that `del.left` keys can take, by the first
-- one's keys (itself, its registry, its registered writes), and whether that
-- left some out. A dry run takes all.
function Delete.affordable(del, doomed)
  if del.ctx.dry or #doomed == 0 then
    return doomed, false
  end
  local fit = math.floor(del.left / (del.per + 2)) + 1
  if #doomed <= fit then
    return doomed, false
  end
  local first = {}
  for i = 1, fit do -- not unpack: fit may pass Lua's stack limit
    first[i] = doomed[i]
  end
  return first, true
end

-- Every write of the doomed checkpoints from one query over the thread's
-- writes, when the registry estimate fits `del.reads` and so does the answer;
-- else nil (then they are looked up by checkpoint id, see next_chunk). A
-- shortcut, not a second rule: the same owners judge every key; lookups by
-- id alone cost a thread of 1,000 checkpoints about 30% more server time.
function Delete.all_writes(del, doomed)
  if #doomed == 0 or del.per * #doomed > del.reads then
    return nil
  end
  local res = Search.search(del.ctx.wp_index, '@thread_id:{$t}', del.thread, del.reads)
  if res[1] > #res - 1 then
    return nil -- the thread has more writes than one answer may hold
  end
  del.reads = del.reads - (#res - 1)
  local found = {}
  Delete.match_writes(res, del.thread, del.owners, found)
  return found
end

-- The doomed checkpoints whose writes RediSearch can find by id, and the
-- query parameter of each (by doc); one it cannot is kept, its writes unseen.
function Delete.findable(ctx, doomed)
  local out, params = {}, {}
  for _, d in ipairs(doomed) do
    params[d] = Keys.id_param(d.id, ctx.layout.commas)
    if params[d] then
      out[#out + 1] = d
    end
  end
  return out, params
end

-- The writes index's answer for the doomed checkpoints from position `first`
-- on, within del.reads entries: up to WRITES_CHUNK of them, as many as fit by
-- del.per writes each, halved while their writes do not fit, down to one
-- (whose writes may then take several calls). A chunk of several asks for at
-- most half the reads left, so a cut-short answer always leaves reads for the
-- smaller chunks after it, down to the one checkpoint that gets the rest (a
-- chunk whose answer is cut short takes nothing: which of its checkpoints
-- got all their writes cannot be told). Returns the chunk, the answer and
-- whether it was cut short; every answer is charged to del.reads.
function Delete.next_chunk(del, doomed, first)
  local limit, spent = del.reads, 0
  local size = math.max(1, math.min(Delete.WRITES_CHUNK, math.floor(limit / (2 * math.max(del.per, 1)))))
  while true do
    local chunk, ids, where = {}, {}, {}
    for j = first, math.min(first + size - 1, #doomed) do
      chunk[#chunk + 1] = doomed[j]
      ids[#ids + 1] = del.params[doomed[j]]
      where[#where + 1] = '$c' .. #ids
    end
    local ask = #chunk > 1 and math.floor((limit - spent) / 2) or limit - spent
    -- the id clause first: RediSearch then walks only those ids' entries
    local res = Search.search(del.ctx.wp_index, '@checkpoint_id:{' .. table.concat(where, ' | ') .. '} @thread_id:{$t}',
      del.thread, ask, { ids = ids })
    spent = spent + #res - 1
    local truncated = res[1] > #res - 1
    if #chunk == 1 or not truncated then
      del.reads = limit - spent
      return chunk, res, truncated
    end
    size = math.floor(#chunk / 2)
  end
end

-- The one take: keys[1..n] into sink `s`, n as many as del.left allows (all
-- or none with `whole`), charged to del.left. Whether all of them went.
function Delete.take_keys(del, s, keys, whole)
  local n = math.min(#keys, del.left)
  if whole and n < #keys then
    return false
  end
  local add = s.add -- a local: this runs once per key
  for i = 1, n do
    add(keys[i])
  end
  del.left = del.left - n
  return n == #keys
end

-- Take checkpoint d and its writes `ws` into the sinks while del.left keys
-- remain: false when not all of it fits (the writes that fit are taken). Its
-- own keys, all or none: itself, its registry and, when it takes its
-- namespace's latest pointer with it (del.pointers, the plan's), that pointer.
function Delete.take(del, d, ws, truncated)
  local pointer = del.pointers[d.key] and Keys.latest_key(del.ctx, del.thread, d.ns)
  local own = pointer and 3 or 2
  local fits = not truncated and #ws + own <= del.left
  Delete.take_keys(del, del.writes, ws, false)
  if not fits then
    return false
  end
  Delete.take_keys(del, del.ckpts, { d.key }, true)
  Delete.take_keys(del, del.others, { Keys.registry_key(del.thread, d), pointer }, true)
  return true
end

-- Whether write `key` is stranded: its own fields name a thread (`owner`, when
-- given), namespace and checkpoint (with an id older than `before`, when
-- given), it is stored where the saver would store such a write, and that
-- checkpoint is gone (missing, or a placeholder: see is_placeholder). Returns
-- the checkpoint's key and its doc { ns, id }; else nil.
function Delete.stranded_write(ctx, key, owner, before)
  local t, ns, id = Search.identity(key)
  local d = { ns = ns, id = id }
  if not (t and ns and id) or (owner and t ~= owner) or (before and not Keys.older(id, before))
    or not Keys.starts_with(key, Keys.write_prefix(ctx, { id = t }, d)) then
    return nil -- (the checks that read nothing more come first)
  end
  local checkpoint = Keys.checkpoint_key(ctx, { id = t }, ns, id)
  return Search.checkpoint_gone(checkpoint) and checkpoint or nil, d
end

-- A prune that deletes the whole thread also takes what a crash left of it:
-- writes tagged with the thread that are stranded (see stranded_write) under
-- a checkpoint of the thread not among the listed `docs`, with their
-- registries and placeholders, whatever their age. Writes under a listed
-- checkpoint's write prefix are left to delete_doomed (a placeholder whose id
-- extends a listed one's keeps its writes: when unsure, keep). Reads up to
-- reads_left entries; returns the keys, writes first, and `cut` when the
-- answer was cut short (case variants of the thread with more writes than
-- that): then the call reports more.
function Delete.leftovers(ctx, thread, docs)
  local owners = Delete.write_owners(ctx, thread, docs)
  local res = Search.search(ctx.wp_index, '@thread_id:{$t}', thread, math.min(Core.reads_left(ctx.budget), ctx.cap))
  local writes, others, seen = {}, {}, {}
  for i = 2, #res do
    local key, listed = res[i], false
    for _, len in ipairs(owners.lengths) do
      listed = listed or (key:byte(len) == 58 and owners.prefix[key:sub(1, len)] ~= nil)
    end
    local checkpoint, d
    if not listed then
      checkpoint, d = Delete.stranded_write(ctx, key, thread.id)
    end
    if checkpoint then
      writes[#writes + 1] = key
      if not seen[checkpoint] then
        seen[checkpoint] = true
        others[#others + 1] = Keys.registry_key(thread, d)
        others[#others + 1] = checkpoint -- UNLINK of a missing key counts nothing
      end
    end
  end
  return { writes = writes, others = others, cut = res[1] > #res - 1 }
end

-- Take the doomed checkpoints in order, with the writes `found` for all of
-- them or, when nil, chunk by chunk. Returns true when some are left.
function Delete.take_all(del, doomed, found)
  local i = 1
  while i <= #doomed do
    local chunk, chunk_found, truncated = { doomed[i] }, found, false
    if not found then
      if del.reads < 1 then
        return true
      end
      local res
      chunk, res, truncated = Delete.next_chunk(del, doomed, i)
      chunk_found = {}
      Delete.match_writes(res, del.thread, del.owners, chunk_found)
    end
    for _, d in ipairs(chunk) do
      if not Delete.take(del, d, chunk_found[d.id] or {}, truncated) then
        return true
      end
    end
    i = i + #chunk
  end
  return false
end

-- Delete a plan's doomed checkpoints oldest first, each with all its writes,
-- its registry zset and, when it was its namespace's newest, the latest
-- pointer, then its `leftovers` and freed `blobs` (if any), within the keys the budget leaves
-- (not in a dry run). Writes are found with one query over the thread's
-- writes when the thread was listed `whole` and that fits 2 * reads_left
-- entries, else chunk by chunk of checkpoint ids. A checkpoint whose writes
-- do not all fit loses only writes this call. Returns counts and whether
-- doomed checkpoints, leftovers or blobs remain.
function Delete.delete_doomed(ctx, thread, p, whole)
  local doomed, b = p.doomed, ctx.budget
  local del = { ctx = ctx, thread = thread, pointers = p.pointers, left = Core.keys_left(b),
    reads = math.min(2 * Core.reads_left(b), ctx.cap),
    per = #doomed > 0 and Listing.registered_writes(thread, doomed[1]) or 0, -- writes, by the first
    ckpts = Delete.sink(b), writes = Delete.sink(b), others = Delete.sink(b), blobs = Delete.sink(b) }
  local trimmed
  doomed, trimmed = Delete.affordable(del, doomed)
  del.owners = Delete.write_owners(ctx, thread, doomed)
  local found, dropped = whole and Delete.all_writes(del, doomed) or nil, 0
  if not found then
    local all = #doomed
    doomed, del.params = Delete.findable(ctx, doomed)
    dropped = all - #doomed
  end
  local more = Delete.take_all(del, doomed, found) or trimmed
  local extra = p.leftovers -- all or none, and more when more may exist than were read
  if not more and extra then
    more = #extra.writes + #extra.others > del.left or extra.cut
    if not more then
      Delete.take_keys(del, del.writes, extra.writes, true)
      Delete.take_keys(del, del.others, extra.others, true)
    end
  end
  if not more and p.blobs and dropped == 0 then -- (a checkpoint kept unseen keeps its blobs)
    -- those that did not fit, or, when this call took some, those not read, are the next
    -- call's (a call that read its fill of blobs and freed none would free none next time)
    more = not Delete.take_keys(del, del.blobs, p.blobs.keys, false) or (p.blobs.cut and #p.blobs.keys > 0)
  end
  Delete.check_deletable(b, { del.writes, del.others, del.blobs, del.ckpts })
  del.writes.flush()
  del.others.flush()
  del.blobs.flush()
  del.ckpts.flush()
  return {
    checkpoints = del.ckpts.deleted,
    writes = del.writes.deleted,
    blobs = del.blobs.deleted,
    keys = del.ckpts.deleted + del.writes.deleted + del.others.deleted + del.blobs.deleted,
    more = more,
  }
end

-- A write prefix that is not the saver's would orphan every write of the
-- checkpoints deleted. The registry zsets record the real write keys: check
-- those of the first doomed checkpoints that have any, before any delete.
function Delete.check_write_prefix(ctx, thread, doomed)
  if ctx.checked.write_prefix then
    return -- once per call: the saver's prefix is the same for every thread
  end
  for i = 1, math.min(#doomed, 8) do
    local d = doomed[i]
    local member = rcall('ZRANGE', Keys.registry_key(thread, d), 0, 0)[1]
    if member then
      if not Keys.starts_with(member, Keys.write_prefix(ctx, thread, d)) then
        Core.fail('BADARG', 'the writes of ' .. Core.show(d.key) .. ' are stored as ' .. Core.show(member)
          .. ', not under WRITE_PREFIX ' .. Core.show(ctx.wp) .. ': pass the saver\'s '
          .. 'checkpoint_write_prefix; nothing was deleted')
      end
      ctx.checked.write_prefix = true
      return
    end
  end
end
