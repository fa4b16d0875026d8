"""Redis URLs in what lgprune says, and the one database lgprune can work on."""

from __future__ import annotations

import re
from typing import Any

from lgprune.errors import InvalidArgumentError

# scheme://userinfo@ ... up to the last "@" of the word: a password may hold "@", ":" or "/"
USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^\s@]*(?:@[^\s@]*)*)@")
PASSWORD_QUERY = re.compile(r"(?i)([?&;]password=)[^&#\s]*")


def redact(text: str) -> str:
    """`text` with the password of every URL in it replaced by ***: what any message,
    log line or page of lgprune may show of a URL."""

    def hide(match: re.Match[str]) -> str:
        user, colon, _ = match.group(2).partition(":")
        return f"{match.group(1)}{user}:***@" if colon and "/" not in user else f"{match.group(1)}***@"

    return PASSWORD_QUERY.sub(r"\1***", USERINFO.sub(hide, text))


def masked_url(text: str) -> str:
    """A URL given by the user, rebuilt for a message: everything before its last "@" (the
    user information, whatever characters the password holds) and the value of a
    `password` query parameter become ***; only the user name, when it is plain, stays."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    userinfo, at, place = rest.rpartition("@")
    shown = f"{scheme}{sep}"
    if at:
        user, colon, _ = userinfo.partition(":")
        plain = colon and re.fullmatch(r"[\w.+-]*", user, re.ASCII)
        shown += f"{user}:***@" if plain else "***@"
    shown += PASSWORD_QUERY.sub(r"\1***", place)
    return shown if len(shown) <= 200 else shown[:200] + "..."


def check_database(client: Any, where: str = "--url") -> None:
    """Refuse a client on a database other than 0. RediSearch indexes serve database 0
    only (Redis 8 refuses FT.CREATE elsewhere; an index of database 0 lists the keys of
    every database, unchecked), so lgprune cannot prune exactly anywhere else."""
    pool = getattr(client, "connection_pool", client)  # a client, or a pool
    db = int(getattr(pool, "connection_kwargs", {}).get("db") or 0)  # (a cluster has only 0)
    if db != 0:
        raise InvalidArgumentError(
            f"{where} selects database {db}: lgprune works on database 0 only, where the saver's "
            "RediSearch index lives (an index answers for database 0, not for the keys of others)"
        )
