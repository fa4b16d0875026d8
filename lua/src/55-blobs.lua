
-- Blobs (LangGraph.js) --------------------------------------------------------------
-- The channel-value blobs of a thread that no checkpoint left by a plan references. Reads only
-- (before the thread's first delete).
-- Provides: freed_blobs
-- Assumes: Core.now_ms, Core.reads_left, Keys.DEFAULT_GRACE_MS, Keys.ROOT_NS, Keys.blob_key, Keys.older,
--   Search.json_mget, Search.named, Search.search
local Blobs = {}

-- A channel version as the js saver spells it in a blob key (`${version}`):
-- a string as it is, a whole number below 2^53 in decimal; nil for any other
-- number (its JavaScript spelling is not certain here).
function Blobs.version_text(v)
  if type(v) == 'string' then
    return v
  end
  if type(v) == 'number' and v == math.floor(v) and math.abs(v) < 2 ^ 53 then -- (JavaScript's exact integers)
    return string.format('%d', v)
  end
  return nil
end

-- The blob keys that the checkpoints `kept` read back (every channel of their
-- channel_versions, stored inline or not), and the namespaces where one of
-- them cannot be read or spelt: all their blobs stay.
function Blobs.blob_refs(ctx, thread, kept)
  local keys = {}
  for i, d in ipairs(kept) do
    keys[i] = d.key
  end
  local versions = Search.json_mget(keys, '$.checkpoint.channel_versions')
  local refs, unsure = {}, {}
  for i, d in ipairs(kept) do
    if type(versions[i]) ~= 'table' then
      unsure[d.ns] = true
    else
      for channel, version in pairs(versions[i]) do
        local text = Blobs.version_text(version)
        if text then
          refs[Keys.blob_key(ctx, thread, d.ns, channel, text)] = true
        else
          unsure[d.ns] = true
        end
      end
    end
  end
  return refs, unsure
end

-- The blobs of a thread listed whole (`docs`) that plan p frees: found
-- through the blobs index, each confirmed by its own fields to be the key the
-- saver reads for its thread, namespace, channel and version; it goes when
-- no checkpoint left (docs less p.doomed) references it, and the checkpoint
-- that wrote it is not one being stored now (the saver stores blobs before
-- their checkpoint, which is newer than any): one listed or older (its id at
-- most the namespace's newest listed), or one older than DEFAULT_GRACE_MS.
-- Reads up to 2 * reads_left entries (as the writes do; a case variant's
-- blobs are among them). Returns { keys, cut }: cut when entries were left
-- unread.
function Blobs.freed_blobs(ctx, thread, docs, p)
  local doomed, kept, newest = {}, {}, {}
  for _, d in ipairs(p.doomed) do
    doomed[d.key] = true
  end
  for _, d in ipairs(docs) do
    if not doomed[d.key] then
      kept[#kept + 1] = d
    end
    if not newest[d.ns] or d.id > newest[d.ns] then
      newest[d.ns] = d.id
    end
  end
  local refs, unsure = Blobs.blob_refs(ctx, thread, kept)
  local res = Search.search(ctx.layout.blobs.index, '@thread_id:{$t}', thread,
    math.min(2 * Core.reads_left(ctx.budget), ctx.cap),
    { fields = { 'thread_id', 'checkpoint_ns', 'checkpoint_id', 'channel', 'version' } })
  local before, keys = Core.now_ms() - Keys.DEFAULT_GRACE_MS, {}
  for i = 2, #res, 2 do
    local key, f = res[i], Search.named(res[i + 1])
    local ns = f.checkpoint_ns == Keys.ROOT_NS and ctx.root or f.checkpoint_ns
    local writer = f.checkpoint_id
    if f.thread_id == thread.id and ns and not unsure[ns] and f.channel and f.version and writer
      and key == Keys.blob_key(ctx, thread, ns, f.channel, f.version) and not refs[key]
      and ((newest[ns] and writer <= newest[ns]) or Keys.older(writer, before)) then
      keys[#keys + 1] = key
    end
  end
  return { keys = keys, cut = res[1] > (#res - 1) / 2 }
end
