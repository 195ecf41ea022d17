"""What every ``fairrl`` sub-command shares: the one-line error exit and the common options."""

from __future__ import annotations

from typing import Annotated

import typer


def _fail(err: Exception) -> None:
    """A user mistake: one ``error:`` line on stderr, exit code 2, no traceback."""
    typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code=2)


def _echo(msg: str) -> None:
    typer.echo(msg)


OverwriteOption = Annotated[
    bool, typer.Option("--overwrite", help="Start afresh in a folder that holds a run (removes that run's files).")
]
