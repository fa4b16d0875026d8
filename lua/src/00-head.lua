#!lua name=lgprune
--[[
lgprune: keep the newest N checkpoints of a LangGraph thread stored by
langgraph-checkpoint-redis 0.3.6 to 0.5.x (LAYOUT python) or by LangGraph.js's
@langchain/langgraph-checkpoint-redis 1.0 (LAYOUT js), and delete the rest,
inside Redis.

This file is built: its parts are lua/src/*.lua, joined in name order by
`python lua/build.py` (CI checks the join is current). Edit the parts. Each
part keeps its functions in one table, named here; its header says what it
provides and what it assumes of the others (build.py checks both).
  00-head                   this overview, the version
  10-core         Core      redis.call, errors, options, the call's budget,
                            batches
  20-keys         Keys      the layouts and the call's context, UTF-8, tags,
                            thread records, the search probe, every key name
  30-search       Search    the modules, the one FT.SEARCH builder, searches,
                            JSON reads
  40-listing      Listing   a thread's checkpoints: first look, root window,
                            listing
  50-plan         Plan      what goes: the rules per namespace, DeltaChannel
                            history
  55-blobs        Blobs     the js saver's channel-value blobs a plan frees
  60-delete       Delete    a plan's keys found, confirmed and deleted within
                            the budget
  70-thread       Thread    one thread, start to end
  80-sweep        Sweep     a sweep's visits (failures as data), the orphans
                            phase
  85-incremental  Pass      passes: full and incremental, watermarks, time
                            segments (the one way a sweep finds threads)
  90-entry                  the registered functions, each with its contract

Data layout (values are storage-safe: thread "" is stored as EMPTY_ID,
namespace "" as ROOT_NS):
  <cp>:<thread>:<ns>:<checkpoint_id>               JSON checkpoint, index <cp>
  <wp>:<thread>:<ns>:<checkpoint_id>:<task>:<idx>  JSON write, index <wp>
  write_keys_zset:<thread>:<ns>:<checkpoint_id>    zset registry of its writes
  <cp>_latest:<thread>:<ns>                        key of the newest checkpoint
LAYOUT js (the prefixes are fixed: checkpoint, checkpoint_write): indexes
checkpoints and checkpoint_writes; keys spell the root namespace "" (its
checkpoint documents still say ROOT_NS, its writes ""); TAG values are not
split at commas; thread "" is not stored; no latest pointers; channel values
in shared blobs checkpoint_blob:<thread>:<ns>:<channel>:<version> (index
checkpoint_blobs), which a checkpoint reads back by its channel_versions.
Thread ids and namespaces contain colons, so a thread is never found by
parsing or globbing keys: it is looked up through the index (a TAG query,
passed as a parameter, so nothing in the id is query syntax), and every hit
is confirmed against the document's own thread_id and checkpoint_id,
byte for byte, and against the exact key the saver would have built for it.

Rules, per thread:
  * per namespace, keep the newest `keep` checkpoints by checkpoint_id;
  * a subgraph namespace whose checkpoints are all older than the oldest
    kept root checkpoint belongs to turns that are gone: it goes whole;
  * DeltaChannel: every kept checkpoint also keeps its parent chain back to
    the nearest ancestor that stores a value for each delta channel it must
    rebuild (what BaseCheckpointSaver.get_delta_channel_history walks);
  * the checkpoint a namespace's latest pointer names stays while the
    namespace keeps any checkpoint, and counts as kept (its DeltaChannel
    history, its subgraph runs);
  * a deleted checkpoint takes its writes (found through the writes index),
    its write_keys_zset, and, when its namespace goes whole in that call,
    the namespace's latest pointer;
  * js: a blob goes when no checkpoint left in its namespace reads it back
    and the checkpoint that wrote it is not being stored now.
Work per call is bounded by a budget; a caller repeats while `more` is 1.
An error reply means the call deleted nothing: everything a thread needs is
validated and read before its first delete, and a thread that fails after
another thread of the same call deleted something ends the call there,
successfully, to be started again (and fail, having deleted nothing) by the
next call. A sweep names a thread it cannot prune in its reply and goes on.
Every error is "LGPRUNE <CODE> <message>".
]]

local VERSION = '0.4.0'
-- Which code this is: the Python package loads the library with this set to
-- a hash of the file, so a cheap probe tells its own code from any other.
local BUILD = 'dev'
