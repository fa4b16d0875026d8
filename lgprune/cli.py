"""The `lgprune` command line: exit 0 on success, 2 on a usage error, 1 on a Redis error."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Annotated, NoReturn

import redis
import typer

from lgprune.errors import InvalidArgumentError, LgpruneError
from lgprune.pruner import Pruner

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Prune LangGraph checkpoints stored in Redis, inside Redis.",
)

DEFAULT_URL = "redis://localhost:6379"

Url = Annotated[
    str | None,
    typer.Option(
        "--url", help="Redis URL (default: $REDIS_URL, then redis://localhost:6379).", show_default=False
    ),
]
CheckpointPrefix = Annotated[str, typer.Option(help="The saver's checkpoint_prefix.")]
WritePrefix = Annotated[str, typer.Option(help="The saver's checkpoint_write_prefix.")]
Budget = Annotated[int | None, typer.Option(min=1, help="Keys deleted per server call (default 2000).")]


def _pruner(url: str | None, checkpoint_prefix: str, write_prefix: str, budget: int | None) -> Pruner:
    client = redis.Redis.from_url(url or os.environ.get("REDIS_URL") or DEFAULT_URL)
    return Pruner(
        client, checkpoint_prefix=checkpoint_prefix, checkpoint_write_prefix=write_prefix, budget=budget
    )


def _fail(error: Exception) -> NoReturn:
    """One clear line on stderr; exit 2 for bad input, 1 for anything from Redis."""
    typer.echo(f"lgprune: {error}", err=True)
    raise typer.Exit(2 if isinstance(error, InvalidArgumentError) else 1)


@app.command()
def prune(
    thread_id: Annotated[str, typer.Argument(help="The thread id, exactly (case-sensitive).")],
    keep: Annotated[int, typer.Option("--keep", min=0, help="Checkpoints to keep per namespace.")],
    url: Url = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would go; delete nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    checkpoint_prefix: CheckpointPrefix = "checkpoint",
    write_prefix: WritePrefix = "checkpoint_write",
    budget: Budget = None,
) -> None:
    """Keep the newest KEEP checkpoints per namespace of one thread; delete the rest."""
    try:
        result = _pruner(url, checkpoint_prefix, write_prefix, budget).prune(thread_id, keep, dry_run=dry_run)
    except (LgpruneError, redis.RedisError) as error:
        _fail(error)
    if as_json:
        typer.echo(json.dumps({"thread_id": thread_id, "dry_run": dry_run, **dataclasses.asdict(result)}))
    else:
        verb = "would delete" if dry_run else "deleted"
        typer.echo(
            f"{thread_id}: {verb} {result.checkpoints_deleted} checkpoints, "
            f"{result.writes_deleted} writes ({result.keys_deleted} keys); kept "
            f"{result.checkpoints_kept} checkpoints ({result.delta_ancestors_kept} for "
            f"DeltaChannel history) in {result.calls} calls"
        )


@app.command()
def install(
    url: Url = None, force: Annotated[bool, typer.Option(help="Load even if present.")] = False
) -> None:
    """Load the lgprune function library into the server (done on first use anyway)."""
    try:
        version = _pruner(url, "checkpoint", "checkpoint_write", None).install(force=force)
    except (LgpruneError, redis.RedisError) as error:
        _fail(error)
    typer.echo(f"lgprune library {version} is loaded")


def main() -> None:
    """Entry point of the `lgprune` script."""
    app(prog_name="lgprune")


if __name__ == "__main__":
    main()
