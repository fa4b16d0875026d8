"""The sans-IO command generators, driven without Redis: what they send, and how they
read replies, resume, stall and reinstall. (Everything else runs against a real Redis.)"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from redis.exceptions import ResponseError

from lgprune.driver import FORCE_INSTALL, INSTALL, Steps, run
from lgprune.errors import (
    IndexMissingError,
    InvalidArgumentError,
    LgpruneError,
    LibraryVersionError,
    ModulesMissingError,
    NoProgressError,
)
from lgprune.library import install_steps, library_build, library_file, library_version
from lgprune.protocol import Options, fcall_steps, many_steps, prune_steps, sweep_steps
from lgprune.results import SWEEP_COUNTS, SWEEP_STATE, reply_fields, reply_pairs


def drive(steps: Steps[Any], replies: list[Any]) -> tuple[Any, list[tuple[Any, ...]]]:
    """Run `steps`, answering each command with the next reply; returns (result, commands)."""
    sent: list[tuple[Any, ...]] = []
    answers = iter(replies)

    def execute(*command: Any) -> Any:
        sent.append(command)
        reply = next(answers)
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    def install(force: bool) -> None:
        sent.append(FORCE_INSTALL if force else INSTALL)

    return run(steps, execute, install), sent


def thread_reply(deleted: int, keys: int, kept: int, more: int) -> list[Any]:
    return [
        b"checkpoints_deleted",
        deleted,
        b"writes_deleted",
        0,
        b"keys_deleted",
        keys,
        b"checkpoints_kept",
        kept,
        b"delta_ancestors_kept",
        0,
        b"more",
        more,
    ]


def test_a_prune_repeats_while_more_and_sums_the_calls() -> None:
    result, sent = drive(
        prune_steps("t", 3, dry_run=False, options=Options(budget=10)),
        [thread_reply(5, 10, 8, 1), thread_reply(5, 10, 3, 0)],
    )
    assert sent == [("FCALL", "lgprune_thread", 0, "t", "3", "BUDGET", "10")] * 2
    assert (result.checkpoints_deleted, result.keys_deleted, result.checkpoints_kept, result.calls) == (
        10,
        20,
        3,
        2,
    )


def test_a_prune_that_says_more_but_deletes_nothing_raises_instead_of_stopping_silently() -> None:
    steps = prune_steps("t", 3, dry_run=False, options=Options(budget=10))
    with pytest.raises(NoProgressError, match="larger budget") as raised:
        drive(steps, [thread_reply(0, 0, 9, 1)])
    assert raised.value.partial is None  # nothing was deleted
    steps = prune_steps("t", 3, dry_run=False, options=Options(budget=10))
    with pytest.raises(NoProgressError) as raised:  # not called a third time
        drive(steps, [thread_reply(2, 6, 7, 1), thread_reply(0, 0, 7, 1), thread_reply(7, 7, 3, 0)])
    assert raised.value.partial is not None
    assert (raised.value.partial.keys_deleted, raised.value.partial.calls) == (6, 2)


def test_a_dry_run_is_one_call_and_says_so() -> None:
    result, sent = drive(prune_steps("t", 0, dry_run=True, options=Options()), [thread_reply(4, 8, 0, 1)])
    assert sent[0][-1] == "DRY_RUN" and result.dry_run and result.calls == 1


@pytest.mark.parametrize("thread_id", ["a\udcff", 5, None])
def test_a_thread_id_that_names_no_stored_thread_is_refused_before_anything_is_sent(thread_id: Any) -> None:
    with pytest.raises(InvalidArgumentError):
        drive(prune_steps(thread_id, 1, dry_run=False, options=Options()), [])


def test_one_string_is_not_a_list_of_thread_ids() -> None:
    with pytest.raises(InvalidArgumentError, match="not one"):
        drive(many_steps("hook9", 1, dry_run=False, options=Options()), [])


@pytest.mark.parametrize(("option", "value"), [("max_age", "7d"), ("grace", 60)])
def test_a_sweep_option_given_as_the_command_line_takes_it_is_refused_with_why(
    option: str, value: Any
) -> None:
    with pytest.raises(InvalidArgumentError, match=r"command line|orphans"):
        drive(sweep_steps(2, dry_run=False, options=Options(), **{option: value}), [])


@pytest.mark.parametrize("keep", [-1, "5", 2.5, None, True])
def test_bad_keep_is_refused_before_anything_is_sent(keep: Any) -> None:
    with pytest.raises(InvalidArgumentError):
        drive(prune_steps("t", keep, dry_run=False, options=Options()), [])


def test_many_resumes_at_the_thread_it_names() -> None:
    first = [*thread_reply(3, 6, 4, 0)[:-2], b"next", 2]
    second = [*thread_reply(2, 4, 1, 0)[:-2], b"next", 0]
    result, sent = drive(many_steps(["a", "b", "c"], 1, dry_run=False, options=Options()), [first, second])
    assert sent[0][3:7] == ("1", "3", "a", "b") and sent[1][3:6] == ("1", "2", "b")
    assert (result.checkpoints_deleted, result.calls) == (5, 2)


def sweep_reply(cursor: str, keys: int) -> dict[bytes, Any]:  # as RESP3 sends it
    counts = {name.encode(): 0 for name in SWEEP_COUNTS}
    return {
        **counts,
        b"cursor": cursor.encode(),
        b"kind": b"full",
        b"since": b"0",
        b"unfinished": b"0",
        b"keys_deleted": keys,
    }


def test_a_sweep_follows_the_cursor_as_text_until_0() -> None:
    result, sent = drive(
        sweep_steps(5, dry_run=False, options=Options()),
        [sweep_reply("00", 3), sweep_reply("17", 2), sweep_reply("0", 1)],
    )
    assert [command[3] for command in sent] == ["0", "00", "17"]  # "00" is not "0": not done
    assert (result.keys_deleted, result.calls, result.cursor) == (6, 3, "0")


def test_a_sweep_that_stalls_three_times_fails_without_deleting_more() -> None:
    with pytest.raises(NoProgressError, match="no progress"):
        drive(
            sweep_steps(5, dry_run=False, options=Options()),
            [sweep_reply("0", 0)] * 0 + [sweep_reply("9", 0)] * 4,
        )


def test_durations_become_milliseconds_and_bad_ones_are_refused() -> None:
    _, sent = drive(
        sweep_steps(2, dry_run=True, options=Options(), max_age=1.5, idle_ttl=60, orphans=True, grace=0.25),
        [sweep_reply("0", 0)],
    )
    assert sent[0][4:] == ("2", "MAX_AGE", "1500", "IDLE_TTL", "60000", "GRACE", "250", "ORPHANS", "DRY_RUN")
    with pytest.raises(InvalidArgumentError):
        drive(sweep_steps(2, dry_run=True, options=Options(), max_age=-1), [])


def test_a_lost_library_is_reinstalled_by_the_driver_once_then_called_again() -> None:
    result, sent = drive(
        fcall_steps("lgprune_thread", ["t", "1"]),
        [ResponseError("ERR Function not found"), [b"more", 0]],
    )
    assert sent == [
        ("FCALL", "lgprune_thread", 0, "t", "1"),
        INSTALL,
        ("FCALL", "lgprune_thread", 0, "t", "1"),
    ]
    assert result == [b"more", 0]
    with pytest.raises(ResponseError):
        drive(fcall_steps("x", []), [ResponseError("ERR Function not found")] * 2)


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ('LGPRUNE NOINDEX index "checkpoint" does not exist: run setup() first', IndexMissingError),
        ("LGPRUNE NOMODULE this server has no RedisJSON module", ModulesMissingError),
        ("LGPRUNE BADARG KEEP must be a non-negative integer", InvalidArgumentError),
        ("LGPRUNE PARTIAL the index returned 3 of 5 entries", LgpruneError),
        ("LGPRUNE BADARG the word index and a module in a message", InvalidArgumentError),
        ("ERR unknown command 'FCALL'", ModulesMissingError),
    ],
)
def test_server_errors_map_to_exceptions_by_their_code(message: str, error: type[Exception]) -> None:
    with pytest.raises(error) as raised:
        drive(fcall_steps("lgprune_thread", []), [ResponseError(message)])
    assert type(raised.value) is error
    if message.startswith("LGPRUNE"):
        assert str(raised.value) == message.split(" ", 2)[2]  # the message, without the code


def test_install_probes_a_few_bytes_and_loads_only_when_needed() -> None:
    ours = [library_version().encode(), library_build().encode()]
    version, sent = drive(install_steps(), [ours])
    assert (version, sent) == (library_version(), [("FCALL", "lgprune_version", 0, "BUILD")])
    _, sent = drive(install_steps(), [[library_version().encode(), b"dev"], b"lgprune"])
    assert sent[1][:3] == ("FUNCTION", "LOAD", "REPLACE")
    _, sent = drive(install_steps(), [library_version().encode(), b"lgprune"])  # a library older than BUILD
    assert sent[1][:3] == ("FUNCTION", "LOAD", "REPLACE")
    major = int(library_version().split(".")[0])
    newer = f"{major}.99.0"
    file = library_file().replace(f"local VERSION = '{library_version()}'", f"local VERSION = '{newer}'")
    build = hashlib.sha256(file.encode()).hexdigest()[:16]
    built = file.replace("local BUILD = 'dev'", f"local BUILD = '{build}'")
    listing = [[b"library_name", b"lgprune", b"library_code", built.encode()]]
    version, sent = drive(install_steps(), [[newer.encode(), build.encode()], listing])
    assert version == newer and sent[1][:2] == ("FUNCTION", "LIST")  # a newer build: never downgraded
    with pytest.raises(LibraryVersionError, match="lgprune install --force"):  # no package built it
        drive(install_steps(), [[newer.encode(), b"x"], listing])


def test_replies_parse_the_same_from_resp2_and_resp3() -> None:
    flat = [b"a", 1, b"b", b"2"]
    assert reply_pairs(flat) == reply_pairs({b"a": 1, b"b": b"2"}) == {"a": 1, "b": b"2"}
    assert reply_fields(flat) == {"a": 1, "b": 2}


def test_the_python_side_reads_the_librarys_facts_and_names_only_what_it_has() -> None:
    from dataclasses import fields

    from lgprune import facts
    from lgprune.errors import CODES
    from lgprune.results import PruneResult, SweepResult

    assert set(CODES) <= set(facts.ERROR_CODES)
    assert set(facts.COUNT_FIELDS) <= {f.name for f in fields(PruneResult)}
    assert set(SWEEP_COUNTS) | set(SWEEP_STATE) <= {f.name for f in fields(SweepResult)}
    assert (facts.MIN_BUDGET, facts.MAX_MANY) > (0, 0)
    with pytest.raises(LookupError):
        facts.option("FAST")


def test_an_error_after_calls_that_deleted_carries_what_they_did() -> None:
    first = [b"checkpoints_deleted", 2, b"writes_deleted", 4, b"keys_deleted", 8]
    first += [b"checkpoints_kept", 3, b"delta_ancestors_kept", 0, b"more", 1]
    with pytest.raises(InvalidArgumentError) as raised:
        drive(
            prune_steps("t", 3, dry_run=False, options=Options()),
            [first, ResponseError("LGPRUNE BADARG the DeltaChannel history of x is longer")],
        )
    assert raised.value.partial is not None and raised.value.partial.keys_deleted == 8
    with pytest.raises(InvalidArgumentError) as raised:
        drive(prune_steps("t", 3, dry_run=False, options=Options()), [ResponseError("LGPRUNE BADARG no")])
    assert raised.value.partial is None
