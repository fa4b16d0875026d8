"""`lgprune prune` and `lgprune install`."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Annotated

import typer

from lgprune.cli.common import (
    AsJson,
    Budget,
    CheckpointPrefix,
    DryRun,
    Keep,
    Layout,
    Url,
    WritePrefix,
    errors,
    plural,
    pruner,
)
from lgprune.results import PruneResult


def prune_line(thread_id: str, result: PruneResult) -> str:
    """What `prune` prints for one thread; the id quoted, so '' and ' lead' show as they are."""
    name = f"thread {thread_id!r}"
    if result.checkpoints_deleted == 0 and result.checkpoints_kept == 0:
        return f"{name}: no checkpoints found for this thread; nothing to do"
    verb = "would delete" if result.dry_run else "deleted"
    return (
        f"{name}: {verb} {plural(result.checkpoints_deleted, 'checkpoint')}, "
        f"{plural(result.writes_deleted, 'write')}"
        + (f", {plural(result.blobs_deleted, 'blob')}" if result.blobs_deleted else "")
        + f" ({plural(result.keys_deleted, 'key')}); kept "
        f"{plural(result.checkpoints_kept, 'checkpoint')} ({result.delta_ancestors_kept} for "
        f"DeltaChannel history) in {plural(result.calls, 'call')}"
        + (" (dry run: nothing was deleted)" if result.dry_run else "")
    )


def prune(
    thread_id: Annotated[str, typer.Argument(help="The thread id, exactly (case-sensitive).")],
    keep: Keep,
    url: Url = None,
    dry_run: DryRun = False,
    as_json: AsJson = False,
    checkpoint_prefix: CheckpointPrefix = "checkpoint",
    write_prefix: WritePrefix = "checkpoint_write",
    budget: Budget = None,
    layout: Layout = None,
) -> None:
    """Keep the newest KEEP checkpoints per namespace of one thread; delete the rest."""
    with errors(url, layout):
        # the bytes as typed: an id that is not UTF-8 is the library's to refuse, not a crash here
        result = pruner(url, checkpoint_prefix, write_prefix, budget, layout).prune(
            os.fsencode(thread_id), keep, dry_run=dry_run
        )
    if as_json:
        typer.echo(json.dumps({"thread_id": thread_id, **dataclasses.asdict(result)}))
    else:
        typer.echo(prune_line(thread_id, result))


def install(
    url: Url = None,
    force: Annotated[
        bool, typer.Option(help="Load this package's library whatever the server holds.")
    ] = False,
) -> None:
    """Load the lgprune function library into the server: once, by an administrator (a user
    allowed FUNCTION LOAD); the runtime user then needs no such right."""
    with errors(url):
        version = pruner(url, "checkpoint", "checkpoint_write", None).install(force=force)
    typer.echo(f"lgprune library {version} is loaded")
