"""`lgprune check`: whether a set-up can be trusted with cron, one item at a time, changing nothing.

The items: the server's and its modules' versions, the saver's indexes and their layout,
the library (installed against this package's), the rights of the connected user to
prune, sweep, record watermarks and install, and the last passes the watermarks record.

Rights are probed with commands the server checks against the ACL before it runs them,
and that change nothing when it lets them run: UNLINK of an absent key under each prefix,
reads of absent keys, HSET with a field left without its value and ZADD with a score
left without its member (refused by the ACL, or else by their own argument counts),
EXPIRE of an absent key, FUNCTION LOAD of an empty text (refused, or "Missing
library metadata"); then, when the library and the store allow it, a one-call dry-run
sweep runs the library's own read path over the store. A right the server cannot show (a
module missing, a command it does not know) is "unknown", never "ok".

`check_steps` is a sans-IO generator, driven by `lgprune.driver.run` or `arun`.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass
from typing import Any

from redis.exceptions import NoPermissionError, ReadOnlyError, ResponseError

from lgprune.driver import Command, Steps
from lgprune.durations import show
from lgprune.errors import NO_FUNCTIONS, InvalidArgumentError, LgpruneError, python_spelling
from lgprune.facts import DENSE, MIN_BUDGET, WATERMARKS, option
from lgprune.library import Found, library_build, library_version, usable_steps, version_key
from lgprune.protocol import Options
from lgprune.results import as_text, reply_pairs

OK, WARN, FAIL, UNKNOWN = "ok", "warn", "fail", "unknown"
NO_MODULES = "lgprune needs Redis 8 or Redis Stack (search and JSON modules)"
ACL_HINT = "grant it what the README's runtime user has (Least privilege)"
NEVER = "@thread_id:{lgprune} -@thread_id:{lgprune}"  # a query no document matches
JS_INDEXES = ("checkpoints", "checkpoint_writes", "checkpoint_blobs")  # LangGraph.js's saver's indexes


@dataclass(frozen=True)
class Item:
    """One line of the report. `needed`: cron cannot be trusted unless it is ok or warn."""

    name: str
    status: str  # ok, warn, fail or unknown
    detail: str  # naming the Python API's arguments, as its errors do (the CLI names its flags)
    needed: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "detail", python_spelling(self.detail))


@dataclass(frozen=True)
class Report:
    items: tuple[Item, ...]

    @property
    def cron_can_run(self) -> bool:
        return all(item.status in (OK, WARN) for item in self.items if item.needed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "cron_can_run": self.cron_can_run,
            "items": [
                {"name": i.name, "status": i.status, "detail": i.detail, "needed": i.needed}
                for i in self.items
            ],
        }


def unreachable(message: str) -> Report:
    """The report when the server does not answer at all."""
    return Report((Item("server", FAIL, message),))


# --- probes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """A command the ACL checks and that changes nothing; `what` names it in a message."""

    what: str
    command: Command


def _said(error: object) -> str:
    return " ".join(str(error).split())


def _outcome(reply: Any) -> tuple[str, str]:
    """(status, reason) of a probe's reply: refused by the ACL, unknown, or let run."""
    if isinstance(reply, NoPermissionError):
        return FAIL, _said(reply)
    if isinstance(reply, ReadOnlyError):
        return FAIL, "this server is a read-only replica: run lgprune on the primary"
    if isinstance(reply, ResponseError) and "unknown command" in str(reply).lower():
        return UNKNOWN, "the server does not know the command"
    return OK, ""  # its answer, or its own error after the ACL let it run


@dataclass(frozen=True)
class Keys:
    """What the library reads and deletes under one layout."""

    layout: str
    indexes: tuple[str, ...]  # checkpoint, write (and js: blob) index
    prefixes: tuple[str, ...]  # key prefixes it deletes under, each followed by ":"
    checkpoint: str
    write: str


def layout_keys(options: Options, layout: str) -> Keys:
    checkpoint, write = options.checkpoint_prefix, options.checkpoint_write_prefix
    if layout == "js":
        return Keys(layout, JS_INDEXES, (checkpoint, write, "checkpoint_blob"), checkpoint, write)
    prefixes = (checkpoint, write, f"{checkpoint}_latest", "write_keys_zset")
    return Keys(layout, options.indexes(layout), prefixes, checkpoint, write)


def prune_probes(keys: Keys, token: str) -> list[Probe]:
    """The library's calls while it prunes a thread: FCALL, its searches and reads, UNLINK."""
    cp, wp = f"{keys.checkpoint}:{token}", f"{keys.write}:{token}"
    probes = [Probe("FCALL", ("FCALL", "lgprune_version", 0))]
    probes += [
        Probe(f"FT.SEARCH on index {index}", ("FT.SEARCH", index, NEVER, "LIMIT", 0, 0, "DIALECT", 2))
        for index in keys.indexes
    ]
    probes += [
        Probe(f"{name} {key.rpartition(':')[0]}:*", (name, key, *rest))
        for key in (cp, wp)
        for name, rest in (("JSON.GET", ("$",)), ("JSON.MGET", ("$",)), ("EXISTS", ()))
    ]
    probes += [
        Probe(f"JSON.OBJKEYS {keys.checkpoint}:*", ("JSON.OBJKEYS", cp, "$")),
        Probe(f"JSON.TYPE {keys.checkpoint}:*", ("JSON.TYPE", cp)),
        Probe("TIME", ("TIME",)),
    ]
    if keys.layout == "python":
        zset = f"write_keys_zset:{token}"
        probes += [
            Probe(f"GET {keys.checkpoint}_latest:*", ("GET", f"{keys.checkpoint}_latest:{token}")),
            Probe("ZCARD write_keys_zset:*", ("ZCARD", zset)),
            Probe("ZRANGE write_keys_zset:*", ("ZRANGE", zset, 0, 0)),
            Probe("ZSCORE write_keys_zset:*", ("ZSCORE", zset, token)),
        ]
    else:
        probes += [Probe("JSON.MGET checkpoint_blob:*", ("JSON.MGET", f"checkpoint_blob:{token}", "$"))]
    probes += [Probe(f"UNLINK {prefix}:*", ("UNLINK", f"{prefix}:{token}")) for prefix in keys.prefixes]
    return probes


READ_WATERMARKS = Probe(f"HMGET {WATERMARKS}", ("HMGET", WATERMARKS, "lgprune check"))


def sweep_probes(keys: Keys, token: str) -> list[Probe]:
    """What a sweep calls beyond what a prune does: its thread listings, the watermark, and
    the keys where it collects the threads of a dense millisecond and notes where they are."""
    dense = f"{DENSE}:{token}"
    probes = [
        Probe(
            f"FT.AGGREGATE on index {keys.indexes[0]}", ("FT.AGGREGATE", keys.indexes[0], NEVER, "DIALECT", 2)
        ),
        READ_WATERMARKS,
        # a score left without its member (past the arity Redis checks before the ACL): ZADD refuses it
        Probe(f"ZADD {DENSE}:*", ("ZADD", dense, "0", token, "0")),
        Probe(f"HSET {DENSE}:*", ("HSET", dense, token, "0", token)),  # (a field left without its value)
        Probe(f"HGET {DENSE}:*", ("HGET", dense, token)),
        Probe(f"EXPIRE {DENSE}:*", ("EXPIRE", dense, 1)),  # (an absent key: nothing to expire)
        Probe(f"ZRANGE {DENSE}:*", ("ZRANGE", dense, "-", "+", "BYLEX", "LIMIT", 0, 1)),
        Probe(f"EXISTS {DENSE}:*", ("EXISTS", dense)),
        Probe(f"UNLINK {DENSE}:*", ("UNLINK", dense)),
    ]
    if keys.layout == "python":
        probes.append(Probe("SCAN", ("SCAN", 0, "MATCH", f"{keys.checkpoint}_latest:{token}", "COUNT", 1)))
    return probes


WATERMARK_PROBES = [
    # a field without its value: HSET's own count refuses it after the ACL let it run
    Probe(f"HSET {WATERMARKS}", ("HSET", WATERMARKS, "lgprune check", "0", "lgprune check")),
    READ_WATERMARKS,
]
INSTALL_PROBE = Probe("FUNCTION LOAD", ("FUNCTION", "LOAD", ""))  # no library in it: nothing is loaded


def rights_item(name: str, outcomes: list[tuple[Probe, tuple[str, str]]], granted: str) -> Item:
    """The item for a set of probed rights: refused ones fail it, unknown ones leave it unknown."""
    refused = [(p.what, why) for p, (status, why) in outcomes if status == FAIL]
    if refused:
        if any("read-only replica" in why for _, why in refused):
            return Item(name, FAIL, "this server is a read-only replica: run lgprune on the primary")
        return Item(name, FAIL, f"this user may not {', '.join(w for w, _ in refused)}: {ACL_HINT}")
    unknown = dict.fromkeys(str(p.command[0]) for p, (status, _) in outcomes if status == UNKNOWN)
    if unknown:
        return Item(
            name, UNKNOWN, f"the server does not know {', '.join(unknown)}: the rights cannot be told"
        )
    return Item(name, OK, f"{granted} ({len(outcomes)} commands probed)")


# --- server, indexes, layout -------------------------------------------------------------


def _info(section: str) -> Steps[dict[str, Any] | str]:
    """INFO `section` as redis-py parses it, or why it cannot be read."""
    reply = yield ("INFO", section)
    if isinstance(reply, ResponseError):
        return f"this user may not run INFO ({_said(reply)})"
    if not isinstance(reply, dict):
        return f"INFO {section} gave an unexpected reply"
    return reply


def server_item() -> Steps[Item]:
    info = yield from _info("server")
    if isinstance(info, str):
        return Item("server", UNKNOWN, f"{info}; the items below show what runs", needed=False)
    version = as_text(info.get("redis_version", "?"))
    if version_key(version) < (7,):
        return Item("server", FAIL, f"Redis {version}: {NO_FUNCTIONS}")
    return Item("server", OK, f"Redis {version}")


def module_version(number: object) -> str:
    """A module's INFO `ver` (20803) as a dotted version (2.8.3)."""
    try:
        n = int(as_text(number))
    except ValueError:
        return as_text(number)
    return f"{n // 10000}.{n // 100 % 100}.{n % 100}"


def modules_item() -> Steps[Item]:
    info = yield from _info("modules")
    if isinstance(info, str):
        return Item("modules", UNKNOWN, f"{info}; the items below show what runs", needed=False)
    loaded = {as_text(m.get("name", "")).lower(): m.get("ver", "?") for m in info.get("modules", [])}
    found = {label: loaded.get(name) for label, name in (("search", "search"), ("JSON", "rejson"))}
    missing = [label for label, ver in found.items() if ver is None]
    if missing:
        return Item("modules", FAIL, f"no {' or '.join(missing)} module: {NO_MODULES}")
    return Item("modules", OK, ", ".join(f"{label} {module_version(ver)}" for label, ver in found.items()))


def _documents(name: str) -> Steps[int | str | None]:
    """The documents of index `name`: None when it does not exist, text when that cannot be told."""
    reply = yield ("FT.INFO", name)
    if isinstance(reply, ResponseError):
        message = str(reply).lower()
        if "unknown index" in message or "no such index" in message:
            return None
        if "unknown command" in message:
            return f"no search module: {NO_MODULES}"
        return f"index {name!r} cannot be read ({_said(reply)})"
    return int(float(as_text(reply_pairs(reply).get("num_docs", 0))))


@dataclass(frozen=True)
class Store:
    indexes: Item
    layout: Item
    keys: Keys  # the layout's keys (python's when it cannot be told)


def store_steps(options: Options) -> Steps[Store]:
    """Which indexes exist, and the layout as the library chooses it (a store both savers
    index is refused, as its MIXED error does)."""
    cp, wp = options.checkpoint_prefix, options.checkpoint_write_prefix
    names = [cp, wp] + (list(JS_INDEXES) if cp == "checkpoint" else [])  # (js keys are checkpoint:*)
    docs: dict[str, int | None] = {}
    for name in names:
        found = yield from _documents(name)
        if isinstance(found, str):
            unknown = Item("indexes", FAIL if "no search module" in found else UNKNOWN, found)
            return Store(
                unknown, Item("layout", UNKNOWN, "no index could be read"), layout_keys(options, "python")
            )
        docs[name] = found
    python, js = docs[cp] is not None, docs.get(JS_INDEXES[0]) is not None
    given = options.layout
    if python and js:
        layout = Item(
            "layout",
            FAIL,
            f"both savers index the keys {cp}:* (python: index {cp!r}, LangGraph.js: {JS_INDEXES[0]!r}), so "
            "whose a subgraph checkpoint is cannot be told: lgprune prunes neither. Drop the other saver's "
            f"index, without DD: FT.DROPINDEX {cp} if you use LangGraph.js, FT.DROPINDEX {JS_INDEXES[0]} "
            "if you use Python",
        )
        chosen = given or "python"
    elif given and (js if given == "python" else python):
        other = "js" if given == "python" else "python"
        layout = Item(
            "layout",
            FAIL,
            f"this store has only the {other} saver's index: pass LAYOUT {other} (or leave it out)",
        )
        chosen = given
    else:
        chosen = given or ("js" if js else "python")
        whose = "LangGraph.js's saver" if chosen == "js" else "langgraph-checkpoint-redis"
        how = "as LAYOUT says" if given else "the saver whose index exists" if python or js else "the default"
        layout = Item("layout", OK, f"{chosen} ({whose}; {how})")
    keys = layout_keys(options, chosen)
    missing = [name for name in keys.indexes if docs.get(name) is None]
    counts = {name: n for name, n in docs.items() if n is not None}
    shown = ", ".join(f"{name} ({n} document{'' if n == 1 else 's'})" for name, n in counts.items())
    if missing:
        indexes = Item(
            "indexes",
            FAIL,
            f"{' and '.join(map(repr, missing))} {'do' if len(missing) > 1 else 'does'} not exist (found: "
            f"{shown or 'no index'}): run the "
            "saver's setup() first, or pass the prefixes the saver uses (CHECKPOINT_PREFIX, WRITE_PREFIX)",
        )
    else:
        indexes = Item("indexes", OK, shown)
    return Store(indexes, layout, keys)


# --- the library -------------------------------------------------------------------------


def library_item(may_install: bool) -> Steps[tuple[Item, bool]]:
    """The server's library against this package's, and whether it runs as it is (a prune
    then loads nothing): what `install()` would do, without doing it."""
    ours, build = library_version(), library_build()
    try:
        found, usable = yield from usable_steps()
    except LgpruneError as error:  # no Functions, or a library this package must not run
        return Item("library", FAIL, str(error)), False
    except ResponseError as error:
        return Item("library", FAIL, f"the library cannot be asked its version ({_said(error)})"), False
    if usable == ours:
        return Item("library", OK, f"lgprune {ours}, build {build}: this package's"), True
    if usable is not None:
        return Item(
            "library", OK, f"lgprune {usable} (this package: {ours}), a build of a newer package: kept"
        ), True
    return _to_load(found, ours, may_install), False


def _to_load(found: Found | None, ours: str, may_install: bool) -> Item:
    if found is None:
        what = "not loaded"
    elif found[0] == ours:
        if not may_install:  # install() then runs it as it is
            return Item(
                "library", WARN, f"lgprune {ours} with other code (build {found[1]}): it runs as it is"
            )
        what = f"lgprune {ours} with other code (build {found[1]})"
    else:
        what = f"lgprune {found[0]}, older than this package's {ours}"
    if may_install:
        return Item("library", WARN, f"{what}: the first prune loads this package's ({ours})")
    return Item(
        "library", FAIL, f"{what}, and this user may not load it: an administrator must run `lgprune install`"
    )


def install_item(outcome: tuple[str, str], library: Item, runs: bool) -> Item:
    status, why = outcome
    if status == OK:
        return Item("install", OK, "may load the library (FUNCTION LOAD); the README's runtime user need not")
    if status == UNKNOWN:
        return Item("install", UNKNOWN, "the server does not know FUNCTION LOAD (no Redis Functions)")
    if runs or library.status == WARN:
        return Item(
            "install",
            WARN,
            "may not load the library (FUNCTION LOAD), which runs as it is: an administrator runs "
            "`lgprune install` after each upgrade of the package",
        )
    return Item(
        "install", FAIL, f"may not load the library ({why}): an administrator must run `lgprune install`"
    )


# --- a dry run and the watermarks ------------------------------------------------------------


def dry_run_steps(options: Options) -> Steps[str | None]:
    """One dry-run lgprune_sweep call of the least budget: the library's read path over the
    store. None when it ran, else why it failed."""
    dry = Options(options.checkpoint_prefix, options.checkpoint_write_prefix, MIN_BUDGET, options.layout)
    reply = yield ("FCALL", "lgprune_sweep", 0, "0", "1", *dry.arguments(), option("DRY_RUN"))
    if isinstance(reply, ResponseError):
        return _said(reply)
    return None


def _ago(ms: float) -> str:
    seconds = max(0.0, ms / 1000)
    for unit, size, least in (("d", 86400, 2 * 86400), ("h", 3600, 2 * 3600), ("m", 60, 120)):
        if seconds >= least:
            return f"{seconds // size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def rule_text(rule: list[str]) -> str:
    """A watermark's rule (["checkpoint", "checkpoint_write", "keep 10", "max_age -", ...])
    as a sweep's flags would say it."""
    words = []
    for part in rule[2:]:
        name, _, value = part.partition(" ")
        if value == "-" or name == "layout":
            continue
        words.append(f"{name} {show(float(value) / 1000)}" if name != "keep" else f"keep {value}")
    return ", ".join(words)


def passes_item(options: Options, layout: str) -> Steps[Item]:
    """The last complete pass and the last full pass of each sweep rule on these prefixes."""
    reply = yield ("HGETALL", WATERMARKS)
    if isinstance(reply, ResponseError):
        return Item(
            "passes",
            UNKNOWN,
            f"this user may not list {WATERMARKS} (HGETALL; the README's runtime user need not): "
            "check as an administrator to see the last passes",
            needed=False,
        )
    now = yield ("TIME",)
    if isinstance(now, ResponseError):
        return Item("passes", UNKNOWN, f"this user may not run TIME ({_said(now)})", needed=False)
    now_ms = int(as_text(now[0])) * 1000 + int(as_text(now[1])) // 1000
    marks = {as_text(k): as_text(v) for k, v in reply_pairs(reply).items()}
    prefixes = [options.checkpoint_prefix, options.checkpoint_write_prefix]
    lines = []
    for field, value in sorted(marks.items()):
        try:  # a rule as the library spells it (a "full <rule>" field, or a hand-written one, is not)
            rule, mark = json.loads(field), float(value)
            if (
                not isinstance(rule, list)
                or rule[:2] != prefixes
                or ("layout js" in rule) != (layout == "js")
            ):
                continue
            said, full = rule_text(rule), float(marks.get(f"full {field}", "nan"))
        except (ValueError, TypeError, AttributeError):
            continue
        if full == mark:
            lines.append(f"{said}: last pass full, {_ago(now_ms - mark)}")
        else:
            last_full = "never" if math.isnan(full) else _ago(now_ms - full)
            lines.append(f"{said}: last pass incremental, {_ago(now_ms - mark)}; last full {last_full}")
    if not lines:
        return Item("passes", OK, "no sweep has completed on these prefixes yet", needed=False)
    return Item("passes", OK, "; ".join(lines), needed=False)


# --- the whole check ------------------------------------------------------------------------


def check_steps(options: Options, *, token: str | None = None) -> Steps[Report]:
    """Every item, in order. `token` names the absent keys the probes use (default: random)."""
    if options.layout == "js" and options.indexes("python") != ("checkpoint", "checkpoint_write"):
        raise InvalidArgumentError(
            "the js saver's prefixes are fixed: CHECKPOINT_PREFIX and WRITE_PREFIX are for LAYOUT python"
        )
    token = token or f"lgprune-check-{uuid.uuid4().hex}"
    server = yield from server_item()
    modules = yield from modules_item()
    store = yield from store_steps(options)
    install = _outcome((yield INSTALL_PROBE.command))
    library, runs = yield from library_item(install[0] == OK)
    keys = store.keys
    pruning, sweeping = prune_probes(keys, token), sweep_probes(keys, token)
    outcomes: dict[str, tuple[Probe, tuple[str, str]]] = {}
    for probe in {p.what: p for p in [*pruning, *sweeping, *WATERMARK_PROBES]}.values():
        outcomes[probe.what] = probe, _outcome((yield probe.command))
    under = ", ".join(f"{prefix}:*" for prefix in keys.prefixes)
    prune = rights_item(
        "prune", [outcomes[p.what] for p in pruning], f"may search, read and UNLINK under {under}"
    )
    sweep_outcomes = [outcomes[p.what] for p in [*pruning, *sweeping]]
    also = "FT.AGGREGATE, " + ("SCAN, " if keys.layout == "python" else "") + f"HMGET {WATERMARKS}, "
    also += f"ZADD, HSET, HGET, EXPIRE, ZRANGE and UNLINK under {DENSE}:*"
    note, failed = "", None
    if all(status == OK for _, (status, _) in sweep_outcomes):
        if store.indexes.status != OK or store.layout.status != OK:
            note = " (no dry run: the store is not ready)"
        elif not runs:
            note = " (no dry run: the library is not ready)"
        else:
            failed = yield from dry_run_steps(options)
            note = "; a one-call dry-run sweep ran"
    sweep = (
        Item("sweep", FAIL, f"a one-call dry-run sweep failed: {failed}")
        if failed
        else rights_item("sweep", sweep_outcomes, f"as prune, and {also}{note}")
    )
    watermarks = rights_item(
        "watermarks", [outcomes[p.what] for p in WATERMARK_PROBES], f"may HSET and HMGET {WATERMARKS}"
    )
    passes = yield from passes_item(options, keys.layout)
    return Report(
        (
            server,
            modules,
            store.indexes,
            store.layout,
            library,
            prune,
            sweep,
            watermarks,
            install_item(install, library, runs),
            passes,
        )
    )
