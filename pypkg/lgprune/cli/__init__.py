"""The `lgprune` command line: exit 0 on success, 2 on a usage error, 1 on a Redis error.

Every error is one line on stderr, never a traceback, and holds no password. One module
per command group: `prune` (prune, install), `sweep` (sweep, stats), `serve` (serve,
redis), `check` (exit 1: cron cannot run here); what they share is in `common`.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from lgprune import __version__
from lgprune.cli import check as check_commands
from lgprune.cli import prune as prune_commands
from lgprune.cli import serve as serve_commands
from lgprune.cli import sweep as sweep_commands
from lgprune.cli.common import cli_message, one_line

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help text as written: `pip install '.[serve]'` keeps its brackets
    help="Prune LangGraph checkpoints stored in Redis, inside Redis.",
)
# the command list's one-liners (Click would cut each docstring at 45 characters, mid-sentence)
app.command(short_help="Keep the newest KEEP checkpoints of one thread.")(prune_commands.prune)
app.command(short_help="Prune every thread (cron, or --every).")(sweep_commands.sweep)
app.command(short_help="Count threads, checkpoints and what a sweep would free.")(sweep_commands.stats)
app.command(short_help="Load the function library (an administrator, once).")(prune_commands.install)
app.command("redis", short_help="Run the embedded Redis 8.2 in the foreground.")(serve_commands.run_redis)
app.command(short_help="Serve the HTTP API, /metrics and a status page.")(serve_commands.serve)
app.command(short_help="Check a set-up before cron runs it; changes nothing.")(check_commands.check)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lgprune {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Prune LangGraph checkpoints stored in Redis, inside Redis."""


def main() -> None:
    """Entry point of the `lgprune` script: one line on stderr for every error."""
    command = typer.main.get_command(app)
    args = sys.argv[1:] or ["--help"]
    try:
        code = command.main(args=args, prog_name="lgprune", standalone_mode=False)
    except typer.Exit as stop:
        code = stop.exit_code
    except typer.Abort:
        typer.echo("lgprune: aborted", err=True)
        code = 130
    except Exception as error:
        # click's usage errors (typer carries its own copy of click, so no import names them)
        format_message, exit_code = getattr(error, "format_message", None), getattr(error, "exit_code", None)
        if callable(format_message) and isinstance(exit_code, int):
            typer.echo(f"lgprune: {one_line(str(format_message()))}", err=True)
            code = exit_code
        else:  # a bug: still one line, and say what it was
            typer.echo(f"lgprune: unexpected {type(error).__name__}: {cli_message(error)}", err=True)
            code = 1
    sys.exit(code if isinstance(code, int) else 0)


__all__ = ["app", "main"]
