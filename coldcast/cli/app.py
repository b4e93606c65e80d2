"""The Typer application, its consoles and the options and error handling every command shares."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

app = typer.Typer(
    name="coldcast",
    help="Cold-start targeting for podcast ads and promotions with one multi-task model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=False)
err_console = Console(stderr=True)

SpecOpt = Annotated[
    Path | None,
    typer.Option(
        "--spec",
        help="A YAML spec (full or partial), merged over the shipped default.",
        exists=True,
        dir_okay=False,
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override one spec key, e.g. --set world.impressions=20000 (repeatable)."),
]
PresetOpt = Annotated[str | None, typer.Option("--preset", help="A named spec preset shipped with coldcast.")]


def fail(message: str) -> typer.Exit:
    """Print `error: message` on stderr and return the exit (code 2) for the caller to raise."""
    # soft_wrap keeps the message on one line; Text keeps brackets in it from being read as markup
    err_console.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)
    return typer.Exit(code=2)


def load(spec: Path | None, overrides: list[str] | None, preset: str | None = None, base: Path | None = None) -> Any:
    """The resolved spec (over `base`, default the shipped spec), or exit 2 with the spec error's message."""
    from coldcast.core.spec import SpecError, load_spec

    try:
        return load_spec(spec, list(overrides or []), preset=preset, base=base)
    except SpecError as err:
        raise fail(str(err)) from None


def progress_enabled() -> bool:
    """Progress bars on a terminal, or anywhere when COLDCAST_PROGRESS=1 (CI logs stay clean otherwise)."""
    return console.is_terminal or os.environ.get("COLDCAST_PROGRESS") == "1"


@contextmanager
def progress_bar(description: str, total: int, unit: str = "") -> Iterator[Any]:
    """A transient progress bar; yields `update(done, total)` for library progress callbacks."""
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not progress_enabled(),
    ) as bar:
        task = bar.add_task(description, total=total)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@contextmanager
def library_errors() -> Iterator[None]:
    """Turn the library's expected errors (bad spec, data, model folder) into `error: ...` and exit code 2."""
    from coldcast.core.data import DataError
    from coldcast.core.spec import SpecError

    try:
        yield
    except (SpecError, DataError, FileExistsError, FileNotFoundError) as err:
        raise fail(str(err)) from None
