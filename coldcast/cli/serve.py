"""`coldcast serve` and `coldcast package`: run the BentoML service locally, build a deployable bento."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Annotated

import typer

from coldcast.cli.app import app, console, err_console, fail, library_errors

ModelArg = Annotated[
    str,
    typer.Argument(
        help="A model directory (from `coldcast train`; imported into the BentoML model store first) or a store "
        "tag such as coldcast:latest."
    ),
]


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _labels(pairs: list[str] | None) -> dict[str, str]:
    labels = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise fail(f"--label {pair!r} is not of the form key=value")
        labels[key.strip()] = value.strip()
    return labels


def _model_tag(model: str, name: str) -> str:
    """Import a model directory under `name`, or check that a store tag exists."""
    from coldcast.serving.store import import_model, stored_model

    if Path(model).is_dir():
        tag = import_model(model, name=name)
        console.print(f"Imported {model} into the BentoML model store as [bold]{tag}[/]")
        return tag
    if Path(model).exists():
        raise fail(f"{model} is a file, not a model directory or a store tag")
    return str(stored_model(model).tag)


@app.command()
def serve(
    model: ModelArg,
    host: Annotated[str, typer.Option(help="Interface to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port to listen on.")] = 3000,
    log_dir: Annotated[
        Path | None,
        typer.Option(help="Folder for prediction logs (Parquet by UTC day, for monitoring); off when not given."),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker processes, each loads the model (default: serving.workers).")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a serving setting, e.g. --set serving.max_request_rows=5000."),
    ] = None,
    name: Annotated[str, typer.Option(help="Store name for a model directory being imported.")] = "coldcast",
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for the server to be ready.")] = 180.0,
    server_log: Annotated[
        Path | None, typer.Option(help="Append the server's own output to this file (default: shown on failure).")
    ] = None,
) -> None:
    """Serve MODEL over HTTP with BentoML until Ctrl-C: POST /score and /rank, GET /metadata, /livez, /readyz."""
    from coldcast.serving.server import start_server

    if log_dir is not None and log_dir.exists() and not log_dir.is_dir():
        raise fail(f"--log-dir {log_dir} exists and is not a folder")
    for item in set_ or []:
        if not item.startswith("serving."):
            raise fail(f"--set {item!r}: only serving.* settings can change at serve time")
    with library_errors():
        tag = _model_tag(model, name)
        console.print(f"Starting the server for [bold]{tag}[/] on {host}:{port} ...")
        server = start_server(
            tag,
            host=host,
            port=port,
            log_dir=log_dir,
            workers=workers,
            timeout=timeout,
            overrides=list(set_ or []),
            output=server_log,
        )
    console.print(f"Serving [bold]{tag}[/] at [bold]{server.url}[/] (pid {server.pid}); Ctrl-C stops it.")
    console.print(f"  POST {server.url}/score, {server.url}/rank; GET {server.url}/metadata; docs at {server.url}/")
    if log_dir is not None:
        console.print(f"  prediction logs in {log_dir}")
    # a supervisor's SIGTERM stops the server as Ctrl-C does (it runs in a session of its own, so it would not
    # receive the signal and outlive this command)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        while server.running:
            time.sleep(0.5)
    except KeyboardInterrupt:
        console.print("Stopping ...")
        server.stop()
        return
    tail = server.log_tail()
    server.stop()
    err_console.print(f"error: the server exited unexpectedly:\n{tail}", markup=False)
    raise typer.Exit(code=1)


@app.command()
def package(
    model: ModelArg,
    bento_name: Annotated[str, typer.Option("--bento-name", help="Name of the bento.")] = "coldcast",
    version: Annotated[str | None, typer.Option(help="Bento version (default: generated).")] = None,
    label: Annotated[list[str] | None, typer.Option(help="Bento label key=value (repeatable).")] = None,
    name: Annotated[str, typer.Option(help="Store name for a model directory being imported.")] = "coldcast",
) -> None:
    """Build a bento for MODEL without Docker: service code, the model reference and pinned requirements.

    On a machine with Docker, `bentoml containerize <bento tag>` then builds the image.
    """
    from coldcast.serving.package import build_bento

    labels = _labels(label)
    with library_errors():
        tag = _model_tag(model, name)
        console.print(f"Building a bento for [bold]{tag}[/] ...")
        bento = build_bento(tag, name=bento_name, version=version, labels=labels)
    console.print(f"Built bento [bold]{bento}[/]")
    console.print(f"  serve it here:     bentoml serve {bento}")
    console.print(f"  image (Docker):    bentoml containerize {bento}")
