"""What every command shares: options, the one-line error, the client for --url."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from typing import Annotated, Any, NoReturn, TypeVar

import redis
import typer

from lgprune.durations import parse_duration
from lgprune.errors import IndexMissingError, InvalidArgumentError, LgpruneError
from lgprune.facts import MIN_BUDGET
from lgprune.protocol import LAYOUTS
from lgprune.pruner import Pruner
from lgprune.urls import check_database, masked_url, redact

DEFAULT_URL = "redis://localhost:6379"
T = TypeVar("T")

# The Python API's argument names (the library's errors come spelt so, see errors.py),
# as this command line spells them: `layout="js"` is `--layout js`.
FLAG_NAMES = {
    "checkpoint_prefix": "--checkpoint-prefix",
    "checkpoint_write_prefix": "--write-prefix",
    "budget": "--budget",
    "max_age": "--max-age",
    "idle_ttl": "--idle-ttl",
    "grace": "--grace",
    "layout": "--layout",
    "orphans": "--orphans",
    "margin": "--margin",
    "full_every": "--full-every",
    "dry_run": "--dry-run",
}
FLAG_PATTERN = re.compile(r"(?<![-\w])(" + "|".join(FLAG_NAMES) + r')\b(?:="([^"]*)")?')


def _nonempty(value: str) -> str:
    if not value:
        raise typer.BadParameter("must not be empty")
    return value


Url = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Redis URL, database 0 (default: $REDIS_URL, then redis://localhost:6379).",
        show_default=False,
    ),
]
CheckpointPrefix = Annotated[
    str, typer.Option(callback=_nonempty, help="The Python saver's checkpoint_prefix (its index name).")
]
WritePrefix = Annotated[
    str, typer.Option(callback=_nonempty, help="The Python saver's checkpoint_write_prefix (its index name).")
]


def _layout(value: str | None) -> str | None:
    if value is not None and value not in LAYOUTS:
        raise typer.BadParameter(f"must be {' or '.join(LAYOUTS)}, got {value!r}")
    return value


Layout = Annotated[
    str | None,
    typer.Option(
        "--layout",
        callback=_layout,
        metavar="python|js",
        help="Whose keys: python (langgraph-checkpoint-redis) or js (LangGraph.js's saver) "
        "(default: the one whose index exists).",
        show_default=False,
    ),
]
Budget = Annotated[
    int | None,
    typer.Option(min=MIN_BUDGET, help="Keys deleted per server call (default 2000).", show_default=False),
]
Keep = Annotated[int, typer.Option("--keep", min=0, help="Checkpoints to keep per namespace.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Count what would go; delete nothing.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def one_line(text: str) -> str:
    """One line, without the password of any URL in it."""
    return redact(" ".join(text.split()))


def cli_text(text: str) -> str:
    """A message as one line, naming the command line's flags."""
    return FLAG_PATTERN.sub(
        lambda m: FLAG_NAMES[m[1]] + (f" {m[2]}" if m[2] is not None else ""), one_line(text)
    )


def cli_message(error: BaseException) -> str:
    """The error as one line, naming the command line's flags."""
    return cli_text(str(error)) or type(error).__name__


def fail(error: BaseException, *, usage: bool = False) -> NoReturn:
    """One clear line on stderr; exit 2 for bad input (or `usage`), 1 for anything from Redis."""
    typer.echo(f"lgprune: {cli_message(error)}", err=True)
    raise typer.Exit(2 if usage or isinstance(error, InvalidArgumentError) else 1)


def explained(error: BaseException, url: str | None) -> BaseException:
    """`error`, with a hint of --url when no --url nor $REDIS_URL named a server and the
    default one cannot be reached."""
    if url is None and not os.environ.get("REDIS_URL") and isinstance(error, redis.ConnectionError):
        return redis.ConnectionError(
            f"{one_line(str(error))} (no --url given and $REDIS_URL is unset, so {DEFAULT_URL} was "
            "tried: pass --url redis://HOST:PORT or set $REDIS_URL)"
        )
    return error


def wrong_layout(error: BaseException, layout: str | None) -> bool:
    """Whether `error` says the store has no index of the --layout named: a usage error."""
    return layout is not None and isinstance(error, IndexMissingError)


@contextlib.contextmanager
def errors(url: str | None = None, layout: str | None = None) -> Iterator[None]:
    """Turn what lgprune and Redis raise into `fail`; `url` and `layout` as given on the
    command line (None: not given)."""
    try:
        yield
    except (LgpruneError, redis.RedisError, OSError) as error:
        fail(explained(error, url), usage=wrong_layout(error, layout))


def client(url: str | None, connect: Callable[[str], T], *, any_database: bool = False) -> T:
    """A client for --url (else $REDIS_URL, else the default), on database 0 unless
    `any_database`; a malformed URL is bad input, said without its password."""
    where = "--url" if url else "$REDIS_URL" if os.environ.get("REDIS_URL") else "the default URL"
    text = url or os.environ.get("REDIS_URL") or DEFAULT_URL
    try:
        made = connect(text)
    except ValueError as error:
        # redis-py's reason may quote a piece of the password (a "/" in it ends the host part)
        reason = re.sub(r"\s+as\s+'.*'", "", redact(str(error))).rstrip(".")
        if "port" in reason.lower():
            reason += " (percent-encode a password's '/', '@', '?', '#' or spaces)"
        raise InvalidArgumentError(f"{where} {masked_url(text)} is not a Redis URL: {reason}") from None
    pool: Any = getattr(made, "connection_pool", made)
    protocol = getattr(pool, "connection_kwargs", {}).get("protocol")
    if protocol is not None and str(protocol) not in ("2", "3"):
        raise InvalidArgumentError(f"{where} asks for protocol {str(protocol)[:20]}: Redis speaks 2 or 3")
    try:  # an option redis-py does not know fails only when a connection is made: make one (no I/O)
        pool.connection_class(**pool.connection_kwargs)
    except TypeError as error:
        option = re.search(r"argument '([^']*)'", str(error))
        what = f"option {option[1]!r}" if option else "an option"
        raise InvalidArgumentError(
            f"{where} {masked_url(text)} has {what}, which redis-py does not take"
        ) from None
    if not any_database:
        check_database(made, where)
    return made


def pruner(
    url: str | None, checkpoint_prefix: str, write_prefix: str, budget: int | None, layout: str | None = None
) -> Pruner:
    return Pruner(
        client(url, redis.Redis.from_url),
        checkpoint_prefix=checkpoint_prefix,
        checkpoint_write_prefix=write_prefix,
        budget=budget,
        layout=layout,
    )


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def duration(flag: str, help_text: str, *, least: float = 1.0) -> Any:
    """A DURATION option: '30d', '12h', '90m', '45s', '2w' or seconds, at least `least`."""

    def parse(text: str) -> float:
        try:
            return parse_duration(text, name=flag, least=least)
        except InvalidArgumentError as error:
            raise typer.BadParameter(str(error).removeprefix(f"{flag}: ").removeprefix(f"{flag} ")) from None

    return typer.Option(flag, parser=parse, metavar="DURATION", show_default=False, help=help_text)


IdleTtl = Annotated[
    float | None,
    duration("--idle-ttl", "Delete whole threads whose newest checkpoint is older than this (e.g. 30d)."),
]
MaxAge = Annotated[
    float | None,
    duration("--max-age", "Also delete checkpoints older than this (e.g. 7d), but never the newest --keep."),
]
Grace = Annotated[
    float | None,
    duration(
        "--grace",
        "With --orphans: leave orphans younger than this, which may be in flight (default 10m; 0: none).",
        least=0.0,
    ),
]
Orphans = Annotated[
    bool,
    typer.Option("--orphans", help="Also delete writes, registries, pointers whose checkpoint is gone."),
]
Full = Annotated[
    bool,
    typer.Option(
        "--full",
        help="Visit every thread (a full pass). Without it, once a sweep of the same rule completed, only "
        "threads with checkpoints since it began (less --margin) are visited.",
    ),
]
Margin = Annotated[
    float | None,
    duration(
        "--margin",
        "How far before the last sweep an incremental one reads: the writers' clock lag (default 10m).",
        least=0.0,
    ),
]
FullEvery = Annotated[
    float,
    duration(
        "--full-every",
        "Sweep in full when the rule's last full sweep began longer ago than this: the backstop "
        "for writers whose clocks lag more than --margin.",
    ),
]
