
-- Core ------------------------------------------------------------------------
-- redis.call, errors (every error an LGPRUNE <CODE> reply), option parsing, the rule (policy), the
-- call's budget, batches.
-- Provides: BATCH, DEFAULT_BUDGET, MAX_MANY, MIN_BUDGET, Stale, batches, entry, error_text, fail, guard,
--   keys_left, new_budget, now_ms, parse_count, parse_options, policy, rcall, reads_left, show,
--   thread_failure, unknown_command
-- Assumes: nothing
local Core = {}

-- redis.call is not reachable while the library loads, so wrap it
local function rcall(...)
  return redis.call(...)
end

Core.DEFAULT_BUDGET = 2000
Core.MAX_BUDGET = 100000
local MIN_BUDGET = 10 -- enough for any call to make progress
local MAX_MANY = 1000 -- thread ids per lgprune_many call
Core.BATCH = 500 -- keys per UNLINK or JSON.MGET: never unpack an unbounded list

-- Errors -------------------------------------------------------------------
-- Every error reply is "LGPRUNE <CODE> <message>"; the Python package maps
-- the code (never the wording) to an exception class:
local ERROR_CODES = {
  'BADARG', -- an argument, option or thread id lgprune refuses
  'NOINDEX', -- the saver's index does not exist (or the prefixes are not the saver's)
  'NOMODULE', -- the server lacks the search or JSON module
  'BADDATA', -- a stored document lgprune cannot read
  'PARTIAL', -- a search answered partially (a timeout?): try again
  'MIXED', -- both savers' indexes cover the same keys: whose a key is cannot be told
  'NOPERM', -- the ACL lets this user read a key the prune must delete, but not delete it
}
-- An error reply means the call deleted nothing (see entry and guard).

Core.Failure = {}

-- Abort the thread or call with "LGPRUNE <code> <msg>", code one of ERROR_CODES.
function Core.fail(code, msg)
  local known = false
  for _, c in ipairs(ERROR_CODES) do
    known = known or c == code
  end
  assert(known, code)
  error(setmetatable({ code = code, msg = msg }, Core.Failure), 0)
end

-- The message of an error pcall caught from redis.call (a table) or Lua (a string).
function Core.error_text(err)
  return tostring(type(err) == 'table' and err.err or err)
end

-- Whether an error says the command does not exist (a module is missing).
function Core.unknown_command(text)
  return text:find('nknown', 1, true) ~= nil and text:find('command', 1, true) ~= nil
end

-- Raised when a fact cached from an earlier call, the search result cap, no
-- longer holds: the thread is planned again in a fresh call (see entry).
Core.Stale = {}

-- Every error as a Failure: a Failure as it is; an error Redis answered a
-- command with as NOPERM when the ACL refused it, else BADDATA (a key of
-- another type than the saver writes, a value it cannot read); a Lua error
-- (data lgprune did not expect) as BADDATA too.
function Core.as_failure(err)
  if getmetatable(err) == Core.Failure then
    return err
  end
  local text = Core.error_text(err)
  if text:find('NOPERM', 1, true) or text:find('No permissions', 1, true) or text:find('ACL failure', 1, true) then
    return setmetatable({ code = 'NOPERM', msg = 'this user may not run a command lgprune needs (' .. text
      .. '): grant it the README\'s ACL; nothing was deleted' }, Core.Failure)
  end
  return setmetatable({ code = 'BADDATA', msg = 'Redis refused a read of stored data (' .. text
    .. '); nothing was deleted' }, Core.Failure)
end

-- Failures of the whole call, never of one thread: where they stand, no
-- thread of the store can be pruned.
Core.CALL_FAILURES = { NOINDEX = true, NOMODULE = true, MIXED = true, NOPERM = true }

-- Why a thread of a sweep cannot be pruned ("<CODE> <message>"), for an error
-- it raised before its first delete; an error of the whole call (and Stale)
-- is raised again.
function Core.thread_failure(err)
  local f = err ~= Core.Stale and Core.as_failure(err)
  if not f or Core.CALL_FAILURES[f.code] then
    error(err, 0)
  end
  return f.code .. ' ' .. f.msg
end

-- Wrap a registered function so that every error becomes an "LGPRUNE <CODE>"
-- reply. A Stale runs the call again from scratch. Functions that prune
-- several threads catch every error of a thread after a delete themselves
-- (see guard and visit), so an error reaching here comes before the call's
-- first delete, and the reply means nothing was deleted.
function Core.entry(body)
  return function(keys, args)
    local ok, res = pcall(body, keys, args)
    if not ok and res == Core.Stale then
      ok, res = pcall(body, keys, args)
    end
    if ok then
      return res
    end
    if res == Core.Stale then
      res = { code = 'PARTIAL', msg = 'the search result cap changed during the call; nothing was deleted, try again' }
    else
      res = Core.as_failure(res)
    end
    return redis.error_reply('LGPRUNE ' .. res.code .. ' ' .. res.msg)
  end
end

-- A short printable rendering of a user value for error messages.
function Core.show(s)
  if s == nil then
    return 'nothing'
  end
  if #s > 40 then
    s = s:sub(1, 40) .. '...'
  end
  return string.format('%q', s)
end

-- Arguments ----------------------------------------------------------------

-- Parse a non-negative decimal integer; values above `max` are clamped to it.
function Core.parse_count(name, s, max)
  if type(s) ~= 'string' or not s:match('^%d+$') then
    Core.fail('BADARG', name .. ' must be a non-negative integer, got ' .. Core.show(s))
  end
  local n = tonumber(s)
  if n > max then
    n = max
  end
  return n
end

-- Read options from args[first..]: flags and NAME value pairs, case-insensitive.
-- spec maps an upper-case option name to 'flag', 'count', 'ms' or 'string'.
function Core.parse_options(args, first, spec)
  local opts = {}
  local i = first
  while i <= #args do
    local name = string.upper(args[i])
    local kind = spec[name]
    if kind == nil then
      Core.fail('BADARG', 'unknown option ' .. Core.show(args[i]))
    elseif kind == 'flag' then
      opts[name] = true
      i = i + 1
    else
      local value = args[i + 1]
      if value == nil then
        Core.fail('BADARG', name .. ' needs a value')
      end
      if kind == 'count' then
        opts[name] = Core.parse_count(name, value, Core.MAX_BUDGET)
      elseif kind == 'ms' then
        opts[name] = Core.parse_count(name, value, 2 ^ 53)
      else
        opts[name] = value
      end
      i = i + 2
    end
  end
  return opts
end

-- The server's clock in milliseconds.
function Core.now_ms()
  local t = rcall('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The budget ------------------------------------------------------------------

-- The budget of one call, made once from BUDGET and passed to what spends it:
--   total  BUDGET: keys one call may delete, and the bound of its reads
--   keys   keys this call has deleted (a dry run deletes none and spends none)
--   work   units a sweep charged for visits, checks and SCAN steps
--   dry    DRY_RUN: nothing is deleted, and what would go is counted uncapped
function Core.new_budget(total, dry)
  return { total = total, keys = 0, work = 0, dry = dry }
end

-- Keys the call may still delete (uncapped in a dry run).
function Core.keys_left(b)
  return b.dry and math.huge or b.total - b.keys
end

-- What a thread may read or walk this call: BUDGET less the keys deleted.
function Core.reads_left(b)
  return b.total - b.keys
end

-- Run fn(...) for one thread of a call that prunes several: true and its
-- result, or false when it failed after this call deleted something (then
-- the call ends there, and the next call starts with that thread and a whole
-- BUDGET: a thread that needs more than what was left, such as a DeltaChannel
-- walk longer than reads_left, is pruned then, and any other error comes
-- before that call's first delete). Errors before the first delete, and Stale
-- then, pass on. The one place that tells "end the call" from "fail it".
function Core.guard(b, fn, ...)
  local ok, res = pcall(fn, ...)
  if ok then
    return true, res
  end
  if b.keys > 0 then
    return false
  end
  error(res, 0)
end

-- What to keep: KEEP newest per namespace; with MAX_AGE also every
-- checkpoint younger than that; with IDLE_TTL nothing of a thread whose
-- newest checkpoint is older than that. Ages come from uuid6 checkpoint ids.
function Core.policy(keep_arg, opts)
  local now = (opts.MAX_AGE or opts.IDLE_TTL) and Core.now_ms()
  return {
    keep = Core.parse_count('KEEP', keep_arg, 2 ^ 53),
    old_before = opts.MAX_AGE and now - opts.MAX_AGE,
    idle_before = opts.IDLE_TTL and now - opts.IDLE_TTL,
  }
end

-- The ranges [first, last] of 1..n in steps of `size`: for first, last in batches(n, size).
function Core.batches(n, size)
  local first = 1 - size
  return function()
    first = first + size
    if first <= n then
      return first, math.min(first + size - 1, n)
    end
  end
end
