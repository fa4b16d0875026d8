"""`lgprune check`: whether cron can be trusted with this set-up, one line per item."""

from __future__ import annotations

import json

import redis
import typer

from lgprune.check import Report, check_steps, unreachable
from lgprune.cli.common import (
    AsJson,
    CheckpointPrefix,
    Layout,
    Url,
    WritePrefix,
    cli_text,
    client,
    errors,
    explained,
)
from lgprune.driver import run
from lgprune.protocol import Options


def check(
    url: Url = None,
    as_json: AsJson = False,
    checkpoint_prefix: CheckpointPrefix = "checkpoint",
    write_prefix: WritePrefix = "checkpoint_write",
    layout: Layout = None,
) -> None:
    """Check a set-up before cron runs it, changing nothing: server and modules, indexes and
    layout, the library, the user's rights to prune, sweep, record watermarks and install,
    and the last passes. Exit 0 when cron can run, 1 when it cannot."""
    with errors():
        connection = client(url, redis.Redis.from_url)
        try:
            report = run(
                check_steps(Options(checkpoint_prefix, write_prefix, None, layout)),
                connection.execute_command,
            )
        except (redis.RedisError, OSError) as error:  # no answer at all: that is the report
            report = unreachable(cli_text(str(explained(error, url))))
        finally:
            connection.close()
    if as_json:
        document = report.as_dict()
        for item in document["items"]:
            item["detail"] = cli_text(item["detail"])
        typer.echo(json.dumps(document))
    else:
        typer.echo(lines(report))
    raise typer.Exit(0 if report.cron_can_run else 1)


def lines(report: Report) -> str:
    """One line per item, then the verdict."""
    width = max(len(item.name) for item in report.items)
    out = [f"{item.status:<8}{item.name:<{width + 2}}{cli_text(item.detail)}" for item in report.items]
    out.append(
        "cron can run" if report.cron_can_run else "cron cannot run: see the items that fail or are unknown"
    )
    return "\n".join(out)
