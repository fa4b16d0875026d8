"""A mutation check of the Lua engine: each mutant disables one rule or proof, and the
tests must catch every one.

    .venv/bin/python -m tests.mutants             every mutant (run from the repo root)
    .venv/bin/python -m tests.mutants NAME ...    only these
    .venv/bin/python -m tests.mutants --list      the mutants and the tests meant to catch each

For each mutant, the repo's lua/, pypkg/ and tests/ (with pyproject.toml and README.md)
are copied into a temporary directory; the mutant's edit is applied to the copied part
in lua/src (its `old` text must occur exactly once: a mutant that no longer applies is an
error, not a pass); the copy's lua/build.py joins the parts into the copy's
lua/lgprune.lua, which the copied package loads through its `lua` symlink; and pytest
runs the mutant's tests in the copy with PYTHONPATH=<copy>/pypkg. Before pytest, a
process with that same environment must show that `import lgprune` is the copy's package,
that the Lua file it ships is the mutated one, and that the library it installs into a
server is that code. The tests' own server (one per pytest run, or $REDIS_URL, whose
functions the fixtures flush per test) gets the library the same way.

pytest exiting 1 (tests failed) is "caught", 0 is "SURVIVED", anything else (a
collection error, a missing test file) is an error of the check. First, unless
--no-baseline, the union of the selected tests runs once on an unmutated copy: a
mutant is only caught by tests that pass without it. Exit status: 0 when every mutant
was caught, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPIED_TREES = ("lua", "pypkg", "tests")
COPIED_FILES = ("pyproject.toml", "README.md")
PYTEST_TIMEOUT_S = 600

RULES = "tests/test_prune_rules.py::"
SWEEP = "tests/test_sweep.py::"
CAP = "tests/test_result_cap.py::"
ERRORS = "tests/test_errors.py::"
CONTRACT = "tests/test_error_contract.py::"
LEFTOVERS = "tests/test_leftovers.py::"
INCREMENTAL = "tests/test_incremental.py::"
DENSE_ACL = "tests/test_acl.py::test_a_user_who_may_not_delete_the_dense_key_is_refused_before_collecting"
JS = "tests/test_js_layout.py::"
JS_READ_BACK = JS + "test_a_prune_keeps_the_newest_and_the_js_saver_reads_them_back"
DENSE = INCREMENTAL + (
    "test_a_millisecond_holding_more_than_one_aggregate_may_read_is_pruned_over_several_calls"
)


@dataclass(frozen=True)
class Mutant:
    name: str
    rule: str  # the rule or proof it disables
    part: str  # a file of lua/src
    old: str  # exact text, which must occur once in the part
    new: str
    tests: tuple[str, ...]  # pytest node ids, from the repo root
    slow: bool = False  # the tests include ones marked slow


MUTANTS = [
    # LangGraph.js stores (LAYOUT js)
    Mutant(
        "js-blob-references",
        "a blob a checkpoint left reads back stays (channel_versions are its references)",
        "55-blobs.lua",
        "          refs[Keys.blob_key(ctx, thread, d.ns, channel, text)] = true\n",
        "          refs[Keys.blob_key(ctx, thread, d.ns, channel, text) .. '?'] = true\n",
        (JS_READ_BACK + "[wang1]",),
    ),
    Mutant(
        "js-blob-in-flight",
        "a blob whose writer is not listed and is newer than the namespace's newest stays",
        "55-blobs.lua",
        "and ((newest[ns] and writer <= newest[ns]) or Keys.older(writer, before)) then",
        "then",
        (JS + "test_a_blob_being_stored_stays_and_a_stale_one_goes",),
    ),
    Mutant(
        "js-blob-own-key",
        "a blob goes only when its fields spell its own key",
        "55-blobs.lua",
        "      and key == Keys.blob_key(ctx, thread, ns, f.channel, f.version) and not refs[key]\n",
        "      and not refs[key]\n",
        (JS + "test_a_blob_being_stored_stays_and_a_stale_one_goes",),
    ),
    Mutant(
        "js-blob-unsure-version",
        "a version lgprune cannot spell as JavaScript does keeps its namespace's blobs",
        "55-blobs.lua",
        "  if type(v) == 'number' and v == math.floor(v) and math.abs(v) < 2 ^ 53 then",
        "  if type(v) == 'number' then",
        (JS + "test_an_unspellable_version_keeps_the_blobs",),
    ),
    Mutant(
        "js-blobs-after-all-checkpoints",
        "blobs are judged only in the call that takes every doomed checkpoint",
        "60-delete.lua",
        "  if not more and p.blobs and dropped == 0 then",
        "  if p.blobs and dropped == 0 then",
        (JS + "test_small_budgets_end_where_one_call_does",),
    ),
    Mutant(
        "js-no-comma-split",
        "a js TAG value is the whole id (no comma split)",
        "20-keys.lua",
        "  if not commas then\n    return thread_id:match('^[^%z]*')\n  end\n",
        "",
        (JS_READ_BACK + "[a,b]",),
    ),
    Mutant(
        "js-root-key",
        "js keys spell the root namespace ''",
        "20-keys.lua",
        "wp_index = 'checkpoint_writes', root = '',",
        "wp_index = 'checkpoint_writes', root = Keys.ROOT_NS,",
        (JS_READ_BACK + "[wang1]",),
    ),
    Mutant(
        "delete-rights-first",
        "every key a prune deletes is checked against the ACL before its first delete",
        "60-delete.lua",
        "  Delete.check_deletable(b, { del.writes, del.others, del.blobs, del.ckpts })\n",
        "",
        (JS + "test_the_readmes_runtime_user_prunes_js_and_a_user_who_may_not_delete_blobs_deletes_nothing",),
    ),
    Mutant(
        "watermark-acl-first",
        "a sweep that may not record its watermark fails before any delete",
        "90-entry.lua",
        "    Delete.check_allowed('HSET', { WATERMARKS })\n",
        "",
        (JS + "test_the_readmes_runtime_user_prunes_js_and_a_user_who_may_not_delete_blobs_deletes_nothing",),
    ),
    Mutant(
        "orphan-acl-first",
        "an orphan the user may not delete fails the sweep before any delete",
        "80-sweep.lua",
        "  if not sw.ctx.dry then\n    Delete.check_allowed('UNLINK', { key })\n  end\n",
        "",
        ("tests/test_acl.py::test_an_orphan_the_user_may_not_delete_fails_the_sweep_before_any_delete",),
    ),
    Mutant(
        "orphans-within-budget",
        "an orphans phase deletes no more keys a call than BUDGET",
        "80-sweep.lua",
        "    if #pending >= Core.keys_left(b) then\n      return false\n    end\n",
        "",
        ("tests/test_seams.py::test_an_orphan_sweep_deletes_no_more_keys_a_call_than_its_budget",),
    ),
    Mutant(
        "segment-lo-carried",
        "a cursor carries where the pass's segments begin (never -inf)",
        "85-incremental.lua",
        "  pass.lo = lo -- (a cursor cannot carry -inf)\n",
        "",
        (INCREMENTAL + "test_a_pass_whose_first_counts_spend_a_call_goes_on_from_where_they_narrowed",),
    ),
    Mutant(
        "count-under-search-cap",
        "a segment's count asks no more than the server's search cap",
        "85-incremental.lua",
        "  return math.min(ctx.group_cap, ctx.cap - 1)\n",
        "  return ctx.group_cap\n",
        (
            JS + "test_a_server_capping_search_results_below_a_segment_sweeps_a_js_store",
            DENSE + "[False]",
        ),
    ),
    Mutant(
        "js-full-window",
        "a full pass over segments reads every checkpoint_ts, a clock ahead's too",
        "85-incremental.lua",
        "    return { { -Pass.MAX_STAMP, Pass.MAX_STAMP } }\n",
        "    return { { 0, pass.start } }\n",
        (JS + "test_a_full_js_sweep_finds_a_thread_stamped_by_a_clock_far_ahead",),
    ),
    Mutant(
        "js-mixed-store",
        "a store both savers index is refused",
        "20-keys.lua",
        "  if js and python then\n",
        "  if false then\n",
        (JS + "test_a_store_both_savers_index_is_refused_and_untouched",),
    ),
    # What is kept
    Mutant(
        "keep-count",
        "per namespace the newest `keep` stay (cut keeps keep - 1)",
        "50-plan.lua",
        "  local last = #ids - keep\n",
        "  local last = #ids - keep + 1\n",
        (RULES + "test_keeps_the_newest_n_and_deletes_the_rest_with_their_writes",),
    ),
    Mutant(
        "latest-pointer-spared",
        "the checkpoint the latest pointer names stays while its namespace keeps any",
        "50-plan.lua",
        "    elseif ids[i] ~= latest then\n",
        "    else\n",
        (RULES + "test_the_checkpoint_the_latest_pointer_names_is_never_pruned",),
    ),
    Mutant(
        "pointer-spared-history",
        "the checkpoint the latest pointer spares keeps its DeltaChannel history",
        "50-plan.lua",
        "  if spared then\n    kept[#kept + 1] = g.doc[spared].key\n  end\n",
        "",
        ("tests/test_seams.py::test_the_checkpoint_the_pointer_spares_keeps_its_delta_history",),
    ),
    Mutant(
        "pointer-spared-is-a-kept-root",
        "the root checkpoint the pointer spares counts as kept for the old-subgraph-run rule",
        "50-plan.lua",
        "  return latest or root.ids[",
        "  return root.ids[",
        ("tests/test_seams.py::test_a_subgraph_run_of_the_checkpoint_the_pointer_spares_stays",),
    ),
    Mutant(
        "subgraph-run-whole",
        "a subgraph run older than every kept root checkpoint goes whole",
        "50-plan.lua",
        "    last = n -- a subgraph run older than every kept root checkpoint\n",
        "    last = last -- mutant: the run keeps `keep` like any namespace\n",
        (RULES + "test_subgraph_state_of_every_kept_checkpoint_is_unchanged",),
    ),
    Mutant(
        "delta-protect",
        "DeltaChannel ancestors of a kept checkpoint (`protect`) stay",
        "50-plan.lua",
        "    if protect[ids[i]] then\n",
        "    if false and protect[ids[i]] then\n",
        (RULES + "test_delta_state_survives_keep_2",),
    ),
    Mutant(
        "delta-walk-one-parent",
        "a DeltaChannel walk goes on to the nearest ancestor storing every needed channel",
        "50-plan.lua",
        "    if next(needed) == nil then\n      return false\n    end\n",
        "    do\n      return false\n    end\n",
        (RULES + "test_delta_state_survives_keep_2",),
    ),
    Mutant(
        "delta-hold",
        "a DeltaChannel parent not stored yet (younger than the grace) holds its namespace",
        "50-plan.lua",
        "      return ms == nil or ms >= Core.now_ms() - Keys.DEFAULT_GRACE_MS\n",
        "      return false\n",
        (RULES + "test_a_delta_chain_through_a_parent_not_stored_yet_holds_older_checkpoints",),
    ),
    Mutant(
        "delta-hold-grace",
        "a missing DeltaChannel parent older than the grace is gone for good, and holds nothing",
        "50-plan.lua",
        "      return ms == nil or ms >= Core.now_ms() - Keys.DEFAULT_GRACE_MS\n",
        "      return true\n",
        (RULES + "test_a_delta_chain_through_a_parent_not_stored_yet_holds_older_checkpoints",),
    ),
    Mutant(
        "delta-hold-ignored",
        "plan_namespace deletes nothing of a held namespace",
        "50-plan.lua",
        "  for i = 1, hold and 0 or last do\n",
        "  for i = 1, last do\n",
        (RULES + "test_a_delta_chain_through_a_parent_not_stored_yet_holds_older_checkpoints",),
    ),
    Mutant(
        "window-exact",
        "a root window is `exact` only when listed whole from before the keep-th newest id",
        "40-listing.lua",
        "    exact = not lo or (newest[1] <= #newest - 1 and Listing.kth_after(list.docs, keep, lo))\n",
        "    exact = true\n",
        (RULES + "test_delta_history_of_a_fork_outside_the_root_window_is_kept",),
    ),
    Mutant(
        "sorted-fallback",
        "DeltaChannel history not provably listed: the root is listed again, sorted",
        "70-thread.lua",
        "if windowed and ((needs_exact and not exact) or",
        "if windowed and ((false) or",
        (RULES + "test_delta_history_of_a_fork_outside_the_root_window_is_kept",),
    ),
    Mutant(
        "pointer-listed",
        "a thread listed in part lists the checkpoint its latest pointer names, which keeps its history",
        "40-listing.lua",
        "    list.put(view.newest)\n",
        "",
        (
            "tests/test_seams.py::test_the_checkpoint_the_pointer_spares_keeps_its_delta_history"
            "[listed-in-part]",
        ),
    ),
    Mutant(
        "newest-root-identity",
        "the checkpoint a latest pointer names is the thread's newest root only if its own fields say so",
        "40-listing.lua",
        "  if t ~= thread.id or ns ~= Keys.ROOT_NS or id ~= d.id then\n",
        "  if false then\n",
        (INCREMENTAL + "test_a_thread_whose_pointer_key_another_threads_namespace_spells_is_still_visited",),
    ),
    Mutant(
        "newest-root-always",
        "the checkpoint a latest pointer names is confirmed by its document for every thread, plain or not",
        "40-listing.lua",
        "  if d and (always or not thread.plain) then\n",
        "  if d and not thread.plain then\n",
        (
            INCREMENTAL + "test_a_thread_active_across_segments_is_visited_once_from_its_newest",
            "tests/test_seams.py::test_a_user_who_may_not_read_the_pointers_checkpoint_deletes_nothing[json.get]",
        ),
    ),
    Mutant(
        "unprunable-placed-once",
        "a thread id lgprune refuses is placed by its pointer all the same: named once a pass",
        "85-incremental.lua",
        "    local thread = Keys.thread_record(id == layout.empty_id and '' or id, layout) or { id = id }\n",
        "    local thread = Keys.thread_record(id == layout.empty_id and '' or id, layout)\n"
        "    if not thread then return false end\n",
        (
            INCREMENTAL
            + "test_a_thread_a_sweep_cannot_prune_is_named_once_a_pass_however_many_segments_hold_it",
        ),
    ),
    Mutant(
        "root-page-own-query",
        "a thread listed in part lists its oldest roots by a query on the root alone",
        "40-listing.lua",
        "  return Search.count_tagged(ctx, thread), nil -- (not the root's page: see list_root)\n",
        "  return Search.count_tagged(ctx, thread), res\n",
        (
            "tests/test_seams.py::"
            "test_max_age_reaches_the_oldest_roots_of_a_large_thread_whose_tag_lists_subgraphs_first",
        ),
    ),
    Mutant(
        "window-none-of-its-own",
        "a large thread whose window and first page list nothing to delete, and at most keep roots, is listed"
        " sorted",
        "70-thread.lua",
        "(#p.doomed == 0 and p.roots <= rule.keep)",
        "(false)",
        (
            "tests/test_seams.py::"
            "test_a_large_thread_whose_window_and_first_page_hold_only_a_case_variant_is_pruned",
        ),
    ),
    Mutant(
        "idle-needs-exact",
        "IDLE_TTL judges a large thread by a listing that proves its newest",
        "70-thread.lua",
        "  local needs_exact = p.delta or rule.idle_before",
        "  local needs_exact = p.delta",
        (
            "tests/test_seams.py::test_idle_ttl_never_judges_a_large_active_thread_by_an_old_checkpoint_put_last",
        ),
    ),
    Mutant(
        "max-age",
        "with max_age only checkpoints older than it go",
        "50-plan.lua",
        "      if not ms or ms >= old_before then\n",
        "      if not ms then\n",
        (SWEEP + "test_max_age_never_leaves_fewer_than_keep",),
    ),
    Mutant(
        "max-age-keep-floor",
        "max_age never takes one of the newest `keep`",
        "50-plan.lua",
        "    while m < last do\n",
        "    while m < #ids do\n",
        (SWEEP + "test_max_age_never_leaves_fewer_than_keep",),
    ),
    Mutant(
        "idle-ttl",
        "idle_ttl deletes a thread whose newest checkpoint is older than it",
        "50-plan.lua",
        "  if ms and ms < rule.idle_before then\n",
        "  if false then\n",
        (SWEEP + "test_idle_ttl_deletes_exactly_the_idle_threads",),
    ),
    Mutant(
        "idle-ttl-within-keep",
        "a sweep with idle_ttl lists threads within keep too (no count-only shortcut)",
        "70-thread.lua",
        "  if ctx.sweep and not ctx.details and not rule.idle_before and tagged <= rule.keep then\n",
        "  if ctx.sweep and not ctx.details and tagged <= rule.keep then\n",
        (SWEEP + "test_idle_ttl_deletes_exactly_the_idle_threads",),
    ),
    Mutant(
        "registry-goes",
        "a deleted checkpoint takes its write_keys_zset",
        "60-delete.lua",
        "  Delete.take_keys(del, del.others, { Keys.registry_key(del.thread, d), pointer }, true)\n",
        "  Delete.take_keys(del, del.others, { pointer }, true)\n",
        (RULES + "test_keeps_the_newest_n_and_deletes_the_rest_with_their_writes",),
    ),
    Mutant(
        "latest-pointer-goes",
        "a namespace left empty loses its latest pointer",
        "50-plan.lua",
        "      p.pointers[d.key] = p.whole and i == #ids or nil\n",
        "      p.pointers[d.key] = nil\n",
        (RULES + "test_keep_zero_deletes_the_thread_and_its_latest_pointer",),
    ),
    Mutant(
        "latest-pointer-stays",
        "a latest pointer goes only with a namespace listed whole whose every checkpoint goes",
        "50-plan.lua",
        "      p.pointers[d.key] = p.whole and i == #ids or nil\n",
        "      p.pointers[d.key] = i == #ids or nil\n",
        ("tests/test_seams.py::test_a_latest_pointer_stays_while_its_namespace_keeps_any_checkpoint",),
    ),
    # Nothing outside the thread
    Mutant(
        "other-doc-thread-id",
        "a non-root entry is the thread's only when its own thread_id is the id, byte for byte",
        "40-listing.lua",
        "  if f.thread_id ~= thread.id or not id or",
        "  if not id or",
        (RULES + "test_threads_whose_keys_extend_ours_are_left_alone",),
    ),
    Mutant(
        "root-doc-colon",
        "a root key is the thread's only when its id after the root prefix has no colon",
        "20-keys.lua",
        (
            "  if Keys.starts_with(key, prefix) and #key > #prefix and not key:find(':', #pre"
            "fix + 1, true) then\n"
        ),
        "  if Keys.starts_with(key, prefix) and #key > #prefix then\n",
        (RULES + "test_threads_whose_keys_extend_ours_are_left_alone",),
    ),
    Mutant(
        "tag-param-backslashes",
        "backslashes in a query parameter are doubled",
        "20-keys.lua",
        "  return (tag:gsub('\\\\', '\\\\\\\\'))\n",
        "  return tag\n",
        (RULES + "test_any_thread_id_matches_exactly",),
    ),
    Mutant(
        "thread-plain",
        "a thread is `plain` (key forms are proof) only when its TAG value is the whole id",
        "20-keys.lua",
        "plain = tag == stored }",
        "plain = true }",
        (
            RULES + "test_another_threads_write_under_our_key_prefix_stays",
            RULES + "test_any_thread_id_matches_exactly",
        ),
    ),
    # A write goes only with its own checkpoint
    Mutant(
        "owns-always",
        "a write found under a doomed checkpoint's prefix is confirmed (`owns`)",
        "60-delete.lua",
        "  if plain and key:find('^[^:]*:%-?%d+$', prefix_len + 1) then\n",
        "  if true then\n",
        (
            RULES + "test_a_kept_checkpoints_writes_stay_when_its_key_extends_a_deleted_ones",
            RULES + "test_another_threads_write_under_our_key_prefix_stays",
        ),
    ),
    Mutant(
        "owns-key-form-unplain",
        "a write key's form is proof only for a plain checkpoint",
        "60-delete.lua",
        "  if plain and key:find('^[^:]*:%-?%d+$', prefix_len + 1) then\n",
        "  if key:find('^[^:]*:%-?%d+$', prefix_len + 1) then\n",
        (RULES + "test_another_threads_write_under_our_key_prefix_stays",),
    ),
    Mutant(
        "owns-identity",
        "a write neither proven by its key nor registered must name the checkpoint in its own fields",
        "60-delete.lua",
        "  return t == thread.id and ns == d.ns and id == d.id\n",
        "  return true\n",
        (RULES + "test_a_kept_checkpoints_writes_stay_when_its_key_extends_a_deleted_ones",),
    ),
    Mutant(
        "write-owner-plain",
        "a doomed checkpoint is plain only with a plain thread and colon-free ns and id",
        "60-delete.lua",
        "    owners.plain[d] = thread.plain and not d.ns:find(':', 1, true)"
        " and not d.id:find(':', 1, true)\n",
        "    owners.plain[d] = true\n",
        (RULES + "test_another_threads_write_under_our_key_prefix_stays",),
    ),
    Mutant(
        "all-writes-truncated",
        "one writes query for the whole thread is used only when it returned every write",
        "60-delete.lua",
        "  if res[1] > #res - 1 then\n",
        "  if false then\n",
        (RULES + "test_writes_beyond_one_answer_are_looked_up_by_checkpoint_id",),
    ),
    Mutant(
        "chunk-leaves-reads",
        "a chunk of several checkpoints leaves reads for the smaller chunks after it (no stall)",
        "60-delete.lua",
        "    local ask = #chunk > 1 and math.floor((limit - spent) / 2) or limit - spent\n",
        "    local ask = limit - spent\n",
        (RULES + "test_a_checkpoint_with_more_writes_than_a_call_reads_does_not_stall_the_thread",),
    ),
    Mutant(
        "checkpoint-with-all-writes",
        "a checkpoint goes only in the call that takes all of its writes",
        "60-delete.lua",
        "  local fits = not truncated and #ws + own <= del.left\n",
        "  local fits = true\n",
        (
            RULES + "test_a_checkpoint_goes_only_in_the_call_that_takes_all_its_writes",
            CAP + "test_a_checkpoint_whose_writes_a_capped_answer_cuts_short_waits_for_all_of_them",
        ),
    ),
    Mutant(
        "pointer-charged",
        "a latest pointer deleted counts against BUDGET",
        "60-delete.lua",
        "  local own = pointer and 3 or 2\n",
        "  local own = 2\n",
        ("tests/test_seams.py::test_a_call_deletes_no_more_keys_than_its_budget_pointer_included",),
    ),
    Mutant(
        "budget-caps-deletes",
        "a call deletes at most BUDGET keys",
        "60-delete.lua",
        "left = Core.keys_left(b),\n",
        "left = math.huge,\n",
        (SWEEP + "test_prune_many",),
    ),
    # Bad input: a clear error, nothing deleted
    Mutant(
        "write-prefix-check",
        "a write prefix that is not the saver's is refused before any delete",
        "60-delete.lua",
        "      if not Keys.starts_with(member, Keys.write_prefix(ctx, thread, d)) then\n",
        "      if false then\n",
        (RULES + "test_custom_prefixes",),
    ),
    Mutant(
        "thread-id-length",
        "a thread id longer than RediSearch matches is refused",
        "20-keys.lua",
        "  if #thread_id > Keys.MAX_TAG_BYTES then\n",
        "  if false then\n",
        (ERRORS + "test_thread_ids_that_cannot_be_matched_are_refused",),
    ),
    # An error reply means the call deleted nothing; a call ends where it must
    Mutant(
        "guard-after-delete",
        "a thread failing after the call deleted something ends the call without an error",
        "10-core.lua",
        "  if b.keys > 0 then\n    return false\n  end\n  error(res, 0)\n",
        "  error(res, 0)\n",
        (
            CONTRACT + "test_unreadable_data_after_a_delete_is_met_first_by_the_next_call",
            CONTRACT + "test_a_thread_that_does_not_fit_what_is_left_ends_the_call_without_error",
        ),
    ),
    Mutant(
        "delta-walk-bound",
        "a DeltaChannel walk is bounded by what the budget leaves",
        "50-plan.lua",
        "    if steps > limit then\n",
        "    if false then\n",
        (CONTRACT + "test_an_error_reply_means_the_call_deleted_nothing",),
    ),
    Mutant(
        "allow-oom",
        "the pruning functions run when memory is full",
        "90-entry.lua",
        "flags = { 'allow-oom', 'no-cluster' } }",
        "flags = { 'no-cluster' } }",
        (CONTRACT + "test_a_prune_runs_at_maxmemory_and_frees_memory",),
    ),
    Mutant(
        "dry-run-twins-read-only",
        "the _ro twins are flagged no-writes (FCALL_RO, replicas)",
        "90-entry.lua",
        "    flags = { 'no-writes', 'no-cluster' } }",
        "    flags = { 'no-cluster' } }",
        ("tests/test_seams.py::test_dry_runs_run_read_only_and_the_flags_say_where_each_function_may_run",),
    ),
    Mutant(
        "version-allow-stale",
        "lgprune_version answers on a stale replica",
        "90-entry.lua",
        "flags = { 'no-writes', 'allow-stale' } }",
        "flags = { 'no-writes' } }",
        ("tests/test_seams.py::test_dry_runs_run_read_only_and_the_flags_say_where_each_function_may_run",),
    ),
    # Servers that cap search results
    Mutant(
        "stale-retry",
        "a Stale cap before the call's first delete runs the call again",
        "10-core.lua",
        "    if not ok and res == Core.Stale then\n",
        "    if false then\n",
        (CAP + "test_a_cap_lowered_after_the_library_learnt_it_is_learnt_again",),
    ),
    Mutant(
        "errors-coded",
        "every error a call answers is an LGPRUNE code",
        "10-core.lua",
        "      res = Core.as_failure(res)\n",
        "      if getmetatable(res) ~= Core.Failure then\n        error(res, 0)\n      end\n",
        ("tests/test_seams.py::test_every_error_of_a_call_is_an_lgprune_code_and_deletes_nothing",),
    ),
    Mutant(
        "rights-never-absent",
        "a read the ACL refuses is an error, never an absent key",
        "30-search.lua",
        "  if Core.error_text(res):find('WRONGTYPE', 1, true) then\n",
        "  if true then\n",
        (
            "tests/test_seams.py::test_a_user_who_may_not_read_the_pointer_deletes_nothing",
            "tests/test_seams.py::test_a_user_who_may_not_read_the_pointers_checkpoint_deletes_nothing",
        ),
    ),
    Mutant(
        "fields-of-nothing",
        "an index entry RediSearch returns without fields is no one's",
        "30-search.lua",
        "  if type(fields) == 'table' then\n",
        "  if true then\n",
        ("tests/test_seams.py::test_a_thread_id_holding_a_nul_byte_stops_no_one",),
    ),
    Mutant(
        "result-cap-restart",
        "a query turns 'LIMIT exceeds maximum' under a cached cap into Stale (capped)",
        "30-search.lua",
        (
            "  if not ok and Search.server[cap] and Core.error_text(res):find('exceeds maximu"
            "m', 1, true) then -- (LIMIT, OFFSET)\n"
        ),
        "  if false then\n",
        (CAP + "test_a_cap_lowered_after_the_library_learnt_it_is_learnt_again",),
    ),
    # Sweeps and orphans
    Mutant(
        "orphan-grace",
        "an orphan write younger than the grace stays",
        "60-delete.lua",
        "(before and not Keys.older(id, before))",
        "(false)",
        (SWEEP + "test_orphans_are_found_and_removed",),
    ),
    Mutant(
        "stranded-where-stored",
        "a write is stranded only where the saver would store it by its own fields",
        "60-delete.lua",
        "    or not Keys.starts_with(key, Keys.write_prefix(ctx, { id = t }, d)) then\n",
        "    then\n",
        (SWEEP + "test_orphans_are_found_and_removed",),
    ),
    Mutant(
        "orphan-pointer-grace",
        "a dangling latest pointer whose checkpoint id is younger than the grace stays",
        "80-sweep.lua",
        "  return rcall('EXISTS', target) == 0 and Keys.older(target:match(':([^:]*)$'), before)\n",
        "  return rcall('EXISTS', target) == 0\n",
        (SWEEP + "test_orphans_are_found_and_removed",),
    ),
    Mutant(
        "placeholder-grace",
        "a placeholder younger than the grace stays",
        "80-sweep.lua",
        "  return Keys.starts_with(key, ctx.cp .. ':') and Keys.older(key:match(':([^:]*)$'), before)\n",
        "  return Keys.starts_with(key, ctx.cp .. ':')\n",
        (
            LEFTOVERS
            + "test_an_orphan_sweep_removes_a_placeholder_older_than_grace_with_its_writes_and_registry",
        ),
    ),
    Mutant(
        "placeholder-is-gone",
        "the writes and registry of a placeholder are those of a checkpoint that is gone",
        "30-search.lua",
        "  return rcall('EXISTS', key) == 0 or Search.is_placeholder(key)\n",
        "  return rcall('EXISTS', key) == 0\n",
        (
            LEFTOVERS
            + "test_an_orphan_sweep_removes_a_placeholder_older_than_grace_with_its_writes_and_registry",
        ),
    ),
    Mutant(
        "leftovers-keep-0",
        "keep 0 also deletes what a crash left of the thread, whatever its age",
        "70-thread.lua",
        "  if Thread.deletes_all(rule) and not view.sorted then\n",
        "  if false then\n",
        (LEFTOVERS + "test_keep_0_and_delete_thread_remove_placeholders_whatever_their_age",),
    ),
    Mutant(
        "visit-counted-when-passed",
        "a thread pruned over several calls counts as one visit",
        "80-sweep.lua",
        "    if done.more == 1 and not dry and done.keys_deleted > 0 then\n      return false\n",
        "    if done.more == 1 and not dry and done.keys_deleted > 0 then\n"
        "      out.threads_visited = out.threads_visited + 1\n      return false\n",
        (SWEEP + "test_a_thread_pruned_over_several_calls_counts_as_one_visit",),
    ),
    Mutant(
        "thread-failure-is-data",
        "a thread that cannot be pruned is named in the reply and the sweep goes on",
        "80-sweep.lua",
        "      why = Core.thread_failure(res)\n",
        "      error(res, 0)\n",
        ("tests/test_seams.py::test_one_thread_that_cannot_be_pruned_never_stops_a_sweep",),
    ),
    Mutant(
        "orphan-registry-prefix",
        "a write registry of another prefix is never an orphan of ours",
        "80-sweep.lua",
        "  if type(first) ~= 'string' or not Keys.starts_with(first, writes) then\n",
        "  if type(first) ~= 'string' then\n",
        (SWEEP + "test_orphans_are_found_and_removed",),
    ),
    Mutant(
        "proven-root-identity",
        "a root key of a thread that is not plain is confirmed by the document's own fields",
        "40-listing.lua",
        "  if d and (always or not thread.plain) then\n",
        "  if d and always then\n",
        (RULES + "test_a_thread_with_a_comma_never_takes_a_namespace_that_spells_its_root",),
    ),
    Mutant(
        "walk-placeholder-parent",
        "a DeltaChannel parent that is only a placeholder is not stored yet: it holds the history",
        "50-plan.lua",
        "    if Search.checkpoint_gone(pkey) then -- missing, or a placeholder: not stored yet\n",
        "    if rcall('EXISTS', pkey) == 0 then\n",
        (RULES + "test_a_delta_parent_that_is_only_a_placeholder_holds_the_history",),
    ),
    Mutant(
        "unprunable-id-named",
        "a thread whose id lgprune cannot prune by is named in the sweep's failures, not skipped unseen",
        "80-sweep.lua",
        "  local done, why = nil, unprunable and 'BADDATA ' .. unprunable .. ': delete it by hand'\n",
        "  local done, why = nil, nil\n",
        (SWEEP + "test_threads_the_index_cannot_match_are_named_and_left",),
    ),
    Mutant(
        "leftovers-cut-more",
        "keep 0 never reports done while a cut-short answer may hide leftovers",
        "60-delete.lua",
        "    more = #extra.writes + #extra.others > del.left or extra.cut\n",
        "    more = #extra.writes + #extra.others > del.left\n",
        (LEFTOVERS + "test_keep_0_never_says_done_while_a_case_variant_hides_leftovers",),
    ),
    # Incremental sweeps
    Mutant(
        "incremental-age-windows",
        "an incremental pass also reads the checkpoints that crossed an age rule since the watermark",
        "85-incremental.lua",
        "    if age then\n",
        "    if false then\n",
        (
            INCREMENTAL + "test_age_rules_visit_threads_that_crossed_their_age_since[max_age]",
            INCREMENTAL + "test_age_rules_visit_threads_that_crossed_their_age_since[idle_ttl]",
        ),
    ),
    Mutant(
        "incremental-margin",
        "an incremental pass reads from the watermark less MARGIN (writers' clock lag)",
        "85-incremental.lua",
        "pass.kind == 'incremental' and mark - Pass.margin_of(opts) or nil\n",
        "pass.kind == 'incremental' and mark or nil\n",
        (INCREMENTAL + "test_a_lagging_writer_is_caught_within_the_margin_and_beyond_it_by_a_full_sweep",),
    ),
    Mutant(
        "incremental-dry-no-watermark",
        "a dry run records no watermark",
        "85-incremental.lua",
        "  if dry or pass.unfinished then\n",
        "  if pass.unfinished then\n",
        (INCREMENTAL + "test_a_dry_run_or_an_abandoned_pass_leaves_the_watermark_where_it_was",),
    ),
    Mutant(
        "incremental-watermark-when-done",
        "only a completed pass moves the watermark",
        "90-entry.lua",
        "  if done then\n    Pass.record_pass(pass, ctx.dry)\n",
        "  if true then\n    Pass.record_pass(pass, ctx.dry)\n",
        (INCREMENTAL + "test_a_dry_run_or_an_abandoned_pass_leaves_the_watermark_where_it_was",),
    ),
    Mutant(
        "incremental-cursor-fingerprint",
        "a cursor continues only a pass of the same rule, margin and kind of run",
        "85-incremental.lua",
        "  if fp ~= pass.fp then\n",
        "  if false then\n",
        (INCREMENTAL + "test_a_cursor_of_another_rule_or_run_is_refused_and_deletes_nothing",),
    ),
    Mutant(
        "incremental-rule-field",
        "each rule (keep, ages, prefixes) has its own watermark: a changed rule runs full",
        "85-incremental.lua",
        "'keep ' .. Pass.ms(rule.keep), 'max_age '",
        "'keep ', 'max_age '",
        (INCREMENTAL + "test_a_lowered_keep_or_another_rule_runs_a_full_pass_and_each_has_its_watermark",),
    ),
    Mutant(
        "incremental-orphans-full",
        "ORPHANS always runs a full pass (orphans are found by SCAN only)",
        "85-incremental.lua",
        "(mark and not (opts.FULL or opts.ORPHANS or due))",
        "(mark and not (opts.FULL or due))",
        (INCREMENTAL + "test_a_lowered_keep_or_another_rule_runs_a_full_pass_and_each_has_its_watermark",),
    ),
    Mutant(
        "incremental-partial-rows",
        "a segment's answer is short only when rows are missing, not ids (a foreign document groups "
        "without a thread_id)",
        "85-incremental.lua",
        "  if #res - 1 < math.min(res[1], n) then -- a search timeout returns partial results\n",
        "  if #ids < math.min(res[1], n) then\n",
        (INCREMENTAL + "test_a_foreign_document_with_a_stamp_but_no_thread_is_passed_over",),
    ),
    Mutant(
        "incremental-margin-field",
        "each margin has its own watermark (a pass with a smaller margin covers less)",
        "85-incremental.lua",
        "    'idle_ttl ' .. given(opts.IDLE_TTL), 'margin ' .. Pass.ms(Pass.margin_of(opts)) }\n",
        "    'idle_ttl ' .. given(opts.IDLE_TTL) }\n",
        (INCREMENTAL + "test_each_margin_has_its_watermark_so_a_smaller_one_never_hides_a_lagging_writer",),
    ),
    Mutant(
        "incremental-next-segment",
        "the next segment starts where the last ended (half-open segments, no gap)",
        "85-incremental.lua",
        "  pass.lo, pass.after, pass.dense, sw.moved = hi, nil, nil, true\n",
        "  pass.lo, pass.after, pass.dense, sw.moved = hi + 1, nil, nil, true\n",
        (INCREMENTAL + "test_segment_and_window_boundaries_lose_no_checkpoint",),
    ),
    Mutant(
        "incremental-range-inclusive",
        "a segment includes its lower bound",
        "85-incremental.lua",
        "  return '@checkpoint_ts:[' .. Pass.ms(lo) .. ' (' .. Pass.ms(hi) .. ']'\n",
        "  return '@checkpoint_ts:[(' .. Pass.ms(lo) .. ' (' .. Pass.ms(hi) .. ']'\n",
        (INCREMENTAL + "test_segment_and_window_boundaries_lose_no_checkpoint",),
    ),
    Mutant(
        "incremental-visited-elsewhere",
        "a thread is visited from the segment holding its newest root checkpoint, once",
        "85-incremental.lua",
        "  if not sw.seen[id] and not Pass.visited_elsewhere(sw, id, lo, hi) then\n",
        "  if not sw.seen[id] then\n",
        (
            INCREMENTAL + "test_a_thread_active_across_segments_is_visited_once_from_its_newest",
            SWEEP + "test_a_sweep_counts_threads_deleted_whole_and_threads_with_subgraphs_once",
        ),
    ),
    Mutant(
        "incremental-visited-there",
        "a thread whose newest root checkpoint lies in the segment is visited there",
        "85-incremental.lua",
        "  if not ts or (lo <= ts and ts < hi) then\n",
        "  if not ts then\n",
        (INCREMENTAL + "test_a_thread_active_across_segments_is_visited_once_from_its_newest",),
    ),
    Mutant(
        "incremental-future-mark",
        "a watermark later than the server's clock is no watermark",
        "85-incremental.lua",
        "  return mark and mark <= now and mark or nil, full and full <= now and full or nil\n",
        "  return mark, full\n",
        (INCREMENTAL + "test_a_watermark_from_the_future_is_no_watermark_and_a_future_cursor_is_refused",),
    ),
    Mutant(
        "incremental-cursor-check",
        "a cursor begun in the future, or reading from after the watermark, is refused",
        "85-incremental.lua",
        "  if pass.start > now or not lo_ok or (pass.kind == 'incremental' and not (from and "
        "pass.since <= from\n",
        "  if false and (pass.kind == 'incremental' and not (from and pass.since <= from\n",
        (INCREMENTAL + "test_a_watermark_from_the_future_is_no_watermark_and_a_future_cursor_is_refused",),
    ),
    Mutant(
        "cursor-segment-bounds",
        "a cursor whose segment has no width or lies outside its pass's windows is refused",
        "85-incremental.lua",
        "    lo_ok = pass.width >= 1 and pass.width <= Pass.MAX_STAMP",
        "    lo_ok = true or pass.width >= 1 and pass.width <= Pass.MAX_STAMP",
        (INCREMENTAL + "test_a_cursor_that_would_never_move_or_would_end_the_pass_unread_is_refused",),
    ),
    Mutant(
        "dense-millisecond-visited",
        "a millisecond denser than one aggregate may read has its threads visited, not passed over",
        "85-incremental.lua",
        "    return dense.segment(sw, pass, lo, hi)\n",
        "    sw.unfinished = true\n    return true\n",
        (DENSE + "[False]", DENSE + "[True]"),
    ),
    Mutant(
        "dense-dry-run-passes-over",
        "a dry run writes no key: it passes over a dense millisecond, the pass unfinished",
        "85-incremental.lua",
        (
            "  if sw.ctx.dry then\n    sw.unfinished = true\n    return true\n  end\n"
            "  local key = Keys.dense_key"
        ),
        "  local key = Keys.dense_key",
        (INCREMENTAL + "test_a_dry_run_passes_over_a_dense_millisecond_and_writes_nothing",),
    ),
    Mutant(
        "dense-cursor-check",
        "a cursor inside a dense millisecond is refused unless a pass can have left it (bounds, its key)",
        "85-incremental.lua",
        "      and dense.continues(pass)\n",
        "\n",
        (INCREMENTAL + "test_a_crafted_cursor_inside_a_dense_millisecond_is_refused_and_deletes_nothing",),
    ),
    Mutant(
        "dense-key-deleted",
        "a dense millisecond's key goes once its threads are visited",
        "85-incremental.lua",
        "  rcall('UNLINK', key)\n  return true\n",
        "  return true\n",
        (DENSE + "[False]",),
    ),
    Mutant(
        "dense-offset-within-cap",
        "a dense millisecond's pages stop at the search cap: the pass prunes what it read, unfinished",
        "85-incremental.lua",
        "    if offset > ctx.cap then\n",
        "    if false then\n",
        (INCREMENTAL + "test_a_dense_millisecond_past_the_search_cap_is_finished_by_the_next_pass",),
    ),
    Mutant(
        "dense-millisecond-several-a-call",
        "grouping is charged at most half the budget: a call resuming in a dense millisecond visits threads",
        "85-incremental.lua",
        "math.min(n * Pass.GROUP_UNITS_PER_ENTRY, math.floor(ctx.budget.total / 2))",
        "n * Pass.GROUP_UNITS_PER_ENTRY",
        (INCREMENTAL + "test_a_dense_millisecond_larger_than_a_call_is_swept_several_threads_a_call",),
    ),
    Mutant(
        "dense-from-segment-limit",
        "a millisecond denser than a new segment is read in pages once, not grouped again by each call",
        "85-incremental.lua",
        (
            "  if pass.dense or n > Pass.segment_cap(ctx) or (n > Pass.segment_limit(ctx) and"
            " not ctx.dry) then\n"
        ),
        "  if pass.dense or n > Pass.segment_cap(ctx) then\n",
        (INCREMENTAL + "test_a_dense_millisecond_larger_than_a_call_is_swept_several_threads_a_call",),
    ),
    Mutant(
        "dense-page-anchor",
        "each page of a dense millisecond confirms the entry before it: moved entries restart it, unfinished",
        "85-incremental.lua",
        "    if offset > 0 and (keys[1] == nil or dense.digest(keys[1]) ~= anchor) then\n",
        "    if false then\n",
        (
            INCREMENTAL + "test_entries_moved_under_a_dense_page_boundary_leave_no_thread_in_a_completed_pass"
            "[put_writes]",
            INCREMENTAL + "test_entries_moved_under_a_dense_page_boundary_leave_no_thread_in_a_completed_pass"
            "[delete_thread]",
        ),
    ),
    Mutant(
        "dense-key-gone-passed-over",
        "a call resuming in a dense millisecond whose key is gone passes over it, the pass unfinished",
        "85-incremental.lua",
        "  elseif pass.dense ~= 'c' and rcall('EXISTS', key) == 0 then\n    sw.unfinished = true\n"
        "    return true\n  end\n",
        "  end\n",
        (
            INCREMENTAL + "test_a_dense_millisecond_whose_key_is_gone_waits_for_the_next_pass[collecting]",
            INCREMENTAL + "test_a_dense_millisecond_whose_key_is_gone_waits_for_the_next_pass[visiting]",
        ),
    ),
    Mutant(
        "dense-offset-charged",
        "a dense page is charged for the entries it skips to its offset, as a count is",
        "85-incremental.lua",
        "math.floor((from + #keys) / SEGMENTS.ENTRIES_PER_UNIT)",
        "math.floor(#keys / SEGMENTS.ENTRIES_PER_UNIT)",
        (INCREMENTAL + "test_a_dense_page_is_charged_for_the_entries_before_its_offset",),
    ),
    Mutant(
        "dense-unlink-checked",
        "the right to delete a dense millisecond's key is checked before it is written",
        "85-incremental.lua",
        "    Delete.check_allowed('UNLINK', { key })\n",
        "",
        (DENSE_ACL + "[unlink-delete]",),
    ),
    Mutant(
        "dense-notes-expire",
        "a pass's notes of where its threads are expire: an abandoned pass leaves nothing for good",
        "85-incremental.lua",
        "    rcall('EXPIRE', notes.key, dense.NOTES_TTL_S)\n",
        "",
        (
            INCREMENTAL + "test_a_thread_met_in_several_dense_milliseconds_is_placed_by_its_note",
            DENSE + "[False]",
        ),
    ),
    Mutant(
        "dense-note-exact-stamp",
        "a note holds the newest root's checkpoint_ts exactly: rounded, it places a thread where it is unmet",
        "85-incremental.lua",
        "string.format('%.17g', ts)",
        "string.format('%.0f', ts)",
        (INCREMENTAL + "test_a_thread_met_in_several_dense_milliseconds_is_placed_by_its_note",),
    ),
    Mutant(
        "dense-notes-checked",
        "the right to write a pass's notes is checked before a dense millisecond is collected",
        "85-incremental.lua",
        "    Delete.check_allowed('HSET', { notes }) -- (and HGET: the notes are read)\n",
        "",
        (DENSE_ACL + "[hset-write to]",),
    ),
    Mutant(
        "dense-notes-read",
        "a thread met again in a dense millisecond is placed by the pass's note, not read again",
        "85-incremental.lua",
        "    noted = Search.unless_wrongtype(pcall(rcall, 'HGET', sw.notes.key, id))\n",
        "    noted = false\n",
        (INCREMENTAL + "test_a_thread_met_in_several_dense_milliseconds_is_placed_by_its_note",),
    ),
    Mutant(
        "dense-notes-other-type",
        "a key of another type where a pass's notes go holds no notes: none are written, the pass completes",
        "85-incremental.lua",
        "    if noted == nil then\n",
        "    if false then\n",
        (INCREMENTAL + "test_notes_of_another_type_are_no_notes_and_the_pass_completes",),
    ),
    Mutant(
        "dense-notes-read-checked",
        "the right to read a pass's notes is checked before a dense millisecond is collected",
        "85-incremental.lua",
        "    Delete.check_allowed('HGET', { notes })\n",
        "",
        (DENSE_ACL + "[hget-read]",),
    ),
    Mutant(
        "watermark-at-pass-start",
        "a pass's watermark is when it began: a write that lands during the pass is read by the next",
        "85-incremental.lua",
        "    rcall('HSET', WATERMARKS, pass.field, Pass.ms(pass.start))\n",
        "    rcall('HSET', WATERMARKS, pass.field, Pass.ms(Core.now_ms()))\n",
        (
            "tests/test_seams.py::test_an_incremental_pass_sees_a_write_that_landed_after_it_visited_the_thread",
        ),
    ),
    Mutant(
        "many-kept-counted-once",
        "lgprune_many counts a thread's kept checkpoints in the call that finishes it",
        "90-entry.lua",
        "      out.checkpoints_kept = 0 -- counted by the call that finishes the thread\n",
        "",
        (
            "tests/test_seams.py::test_prune_many_counts_every_kept_checkpoint_when_it_resumes_inside_a_thread",
        ),
    ),
    Mutant(
        "incremental-resume-after",
        "a call resumes a segment after the last thread it visited",
        "85-incremental.lua",
        (
            "    if (pass.after == nil or Pass.before(pass.after, id)) and not Pass.visit_nex"
            "t(sw, pass, id, lo, hi) then\n"
        ),
        "    if not Pass.visit_next(sw, pass, id, lo, hi) then\n",
        (INCREMENTAL + "test_small_calls_visit_every_active_thread_once_through_narrowed_segments",),
    ),
]

# Left out, and why:
# * leftovers() without its `t == thread.id` check: the key must still start with the write
#   prefix its own namespace and id give under our thread id, which only ids built to alias
#   ours can do (thread `t:a,t`, namespace and id `a,t`, under `t`).
# * search_all's PARTIAL check: only a RediSearch timeout returns a short answer, and every
#   query runs with TIMEOUT 0.
# * the guard around a sweep's SCAN step (sweep_steps): defence in depth. Every read a step
#   makes outside a thread's prune is pcall'd or confined to the saver's keys (see the
#   pointer-target-prefix mutant), so no test can make one fail after a delete.


class CheckError(Exception):
    """The check itself failed: a mutant that does not apply, a build or a test run that broke."""


def copy_repo(dest: Path) -> None:
    """The parts of the repo a test run needs, the package's `lua` symlink kept relative."""
    ignore = shutil.ignore_patterns("__pycache__", ".hypothesis", ".pytest_cache", "node_modules")
    for tree in COPIED_TREES:
        shutil.copytree(ROOT / tree, dest / tree, symlinks=True, ignore=ignore)
    for name in COPIED_FILES:
        shutil.copy2(ROOT / name, dest / name)
    packages = ROOT / "tests" / "js" / "node_modules"  # LangGraph.js's saver: read only, so shared
    if packages.exists():
        (dest / "tests" / "js" / "node_modules").symlink_to(packages)


def build(copy: Path) -> str:
    """Join the copy's parts into its lua/lgprune.lua with its own lua/build.py; the joined text."""
    done = subprocess.run(
        [sys.executable, str(copy / "lua" / "build.py"), "--no-headers"],
        cwd=copy,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise CheckError(f"lua/build.py failed: {(done.stdout + done.stderr).strip()}")
    return (copy / "lua" / "lgprune.lua").read_text(encoding="utf-8")


def apply(mutant: Mutant, copy: Path) -> None:
    """Edit the copied part and rebuild the copy's lua/lgprune.lua, which must change."""
    part = copy / "lua" / "src" / mutant.part
    if not part.is_file():
        raise CheckError(f"lua/src/{mutant.part} does not exist")
    text = part.read_text(encoding="utf-8")
    found = text.count(mutant.old)
    if found != 1:
        raise CheckError(f"its `old` text occurs {found} times in lua/src/{mutant.part}, not once")
    before = build(copy)
    part.write_text(text.replace(mutant.old, mutant.new), encoding="utf-8")
    if build(copy) == before:
        raise CheckError("the edit leaves lua/lgprune.lua as it was")


def environment(copy: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(copy / "pypkg"), env.get("PYTHONPATH")) if p)
    return env


PROBE = """
import importlib.resources, json, sys, redis, lgprune
from lgprune.embedded import EmbeddedRedis
shipped = (importlib.resources.files("lgprune") / "lua" / "lgprune.lua").read_text(encoding="utf-8")
with EmbeddedRedis() as server:
    client = redis.Redis.from_url(server.url, decode_responses=True)
    lgprune.Pruner(client).install()
    entry = client.function_list(library="lgprune", withcode=True)[0]
loaded = entry[entry.index("library_code") + 1]
json.dump({"package": lgprune.__file__, "shipped": shipped, "loaded": loaded}, sys.stdout)
"""
BUILD_LINE = re.compile(r"^local BUILD = '[^']*'$", re.MULTILINE)


def check_loaded(copy: Path) -> None:
    """What the tests will run is the copy's lua/lgprune.lua as built: `import lgprune` finds
    the copy's package, the Lua file it ships is that file, and the library it installs
    into a server (an embedded one of its own) is that code."""
    probe = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=copy, env=environment(copy), capture_output=True, text=True
    )
    if probe.returncode != 0:
        raise CheckError(f"installing lgprune from the copy failed: {probe.stderr.strip()[-2000:]}")
    seen = json.loads(probe.stdout)
    if not Path(seen["package"]).resolve().is_relative_to(copy.resolve()):
        raise CheckError(f"the tests would import lgprune from {seen['package']}, not from the copy")
    built = (copy / "lua" / "lgprune.lua").read_text(encoding="utf-8")
    if seen["shipped"] != built:
        raise CheckError("the Lua the copied package ships is not the copy's lua/lgprune.lua as built")
    if BUILD_LINE.sub("", seen["loaded"]) != BUILD_LINE.sub("", built):
        raise CheckError("the library the copied package installs is not the copy's lua/lgprune.lua")


def run_pytest(copy: Path, tests: list[str], slow: bool) -> tuple[int, str]:
    marker = [] if slow else ["-m", "not slow"]
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *marker, *tests]
    try:
        done = subprocess.run(
            command,
            cwd=copy,
            env=environment(copy),
            capture_output=True,
            text=True,
            timeout=PYTEST_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as timeout:
        raise CheckError(f"pytest ran over {PYTEST_TIMEOUT_S} s") from timeout
    return done.returncode, done.stdout + done.stderr


def tail(output: str, lines: int = 25) -> str:
    return "\n".join("    " + line for line in output.strip().splitlines()[-lines:])


def run_mutant(mutant: Mutant) -> tuple[str, str]:
    """'caught' or 'SURVIVED', and pytest's output; CheckError for anything else."""
    with tempfile.TemporaryDirectory(prefix=f"lgprune-mutant-{mutant.name}-") as tmp:
        copy = Path(tmp)
        copy_repo(copy)
        apply(mutant, copy)
        check_loaded(copy)
        code, output = run_pytest(copy, list(mutant.tests), mutant.slow)
    if code == 1:
        return "caught", output
    if code == 0:
        return "SURVIVED", output
    raise CheckError(f"pytest exited {code}:\n{tail(output)}")


def failed_tests(output: str) -> str:
    """The tests pytest -q names as failed, by name."""
    names = [line.split()[1].split("::", 1)[-1] for line in output.splitlines() if line.startswith("FAILED ")]
    return ", ".join(names)


def union(mutants: list[Mutant]) -> list[str]:
    """Every test the mutants select, once: a whole file covers its tests."""
    ids = list(dict.fromkeys(node for m in mutants for node in m.tests))
    files = {node for node in ids if "::" not in node}
    return [node for node in ids if node in files or node.split("::")[0] not in files]


def baseline(mutants: list[Mutant]) -> None:
    """The selected tests pass on an unmutated copy: else no mutant can be said to be caught."""
    with tempfile.TemporaryDirectory(prefix="lgprune-mutant-baseline-") as tmp:
        copy = Path(tmp)
        copy_repo(copy)
        build(copy)  # as each mutant's copy is: from the parts
        check_loaded(copy)
        code, output = run_pytest(copy, union(mutants), any(m.slow for m in mutants))
    if code != 0:
        raise CheckError(
            f"the selected tests fail without any mutant (pytest exited {code}):\n{tail(output)}"
        )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutants", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="run only these mutants")
    parser.add_argument("--list", action="store_true", help="list the mutants and their tests")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the run of the selected tests without a mutant"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show the end of each pytest run")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="mutants run at once (default 2)")
    args = parser.parse_args(argv)
    names = [m.name for m in MUTANTS]
    if len(set(names)) != len(names):
        parser.error("two mutants share a name")
    unknown = [n for n in args.names if n not in names]
    if unknown:
        parser.error(f"no mutant named {', '.join(unknown)}; --list names them")
    chosen = [m for m in MUTANTS if not args.names or m.name in args.names]
    if args.list:
        for m in chosen:
            print(f"{m.name}: {m.rule} (lua/src/{m.part})")
            for node in m.tests:
                print(f"    {node}")
        return 0

    started = time.monotonic()
    if not args.no_baseline:
        try:
            baseline(chosen)
        except CheckError as error:
            print(f"baseline: ERROR {error}")
            return 1
        print(f"{'(baseline: no mutant)':<28} {'passes':<8} {time.monotonic() - started:6.1f} s", flush=True)

    def judge(mutant: Mutant) -> str:
        began = time.monotonic()
        try:
            status, output = run_mutant(mutant)
            detail = f"  {failed_tests(output)}" if status == "caught" else ""
            if args.verbose:
                detail += "\n" + tail(output)
        except CheckError as error:
            status, detail = "ERROR", f"\n    {error}"
        print(f"{mutant.name:<28} {status:<8} {time.monotonic() - began:6.1f} s{detail}", flush=True)
        return status

    # each mutant runs in its own copy with its own server: they can run side by side
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        failed = sum(status != "caught" for status in pool.map(judge, chosen))
    total = time.monotonic() - started
    print(f"{len(chosen) - failed} of {len(chosen)} mutants caught in {total:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
