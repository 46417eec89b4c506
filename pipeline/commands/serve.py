"""`kgpipe serve`: the REST API on uvicorn."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.commands.common import app, console


@app.command("serve")
def serve_command(
    bundle: Annotated[
        Path | None,
        typer.Option(
            "--bundle", help="bundle folder to serve (default: KGPIPE_BUNDLE, else the shipped one)"
        ),
    ] = None,
    host: Annotated[str, typer.Option("--host", help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="port to listen on")] = 8000,
    workers: Annotated[
        int, typer.Option("--workers", help="server processes (each loads the models once)")
    ] = 1,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            help="search this store instead of the bundle's: a folder, milvus:PATH.db or milvus://HOST:PORT",
        ),
    ] = None,
    max_batch: Annotated[
        int | None,
        typer.Option(
            "--max-batch", help="items one model call batches from concurrent requests (1: no batching) [32]"
        ),
    ] = None,
    max_wait_ms: Annotated[
        float | None, typer.Option("--max-wait-ms", help="how long a model call waits for more requests [5]")
    ] = None,
    max_text_chars: Annotated[
        int | None, typer.Option("--max-text-chars", help="longest text accepted, 413 above [100000]")
    ] = None,
    max_body_bytes: Annotated[
        int | None, typer.Option("--max-body-bytes", help="largest request body, 413 above [2000000]")
    ] = None,
) -> None:
    """Serve linking, classification, extraction and search over HTTP (OpenAPI at /docs, a page to try it at /).

    Example: kgpipe serve --bundle demo_output/bundle --port 8000
    """
    import os

    import uvicorn

    from kg.manifest import read_manifest
    from pipeline.api import limits_from_settings

    flags = {
        "max_batch": max_batch,
        "max_wait_ms": max_wait_ms,
        "max_text_chars": max_text_chars,
        "max_body_bytes": max_body_bytes,
    }
    for name, value in (
        ("--port", port),
        ("--workers", workers),
        *((f"--{k.replace('_', '-')}", v) for k, v in flags.items()),
    ):
        if value is not None and (
            (value < 1 and name != "--max-wait-ms") or value < 0 or (name == "--port" and value > 65535)
        ):
            raise typer.BadParameter(f"{value} is out of range", param_hint=f"'{name}'")
    if bundle is not None:
        read_manifest(bundle, verify=False)  # not a bundle: one line now, not a failed /ready later
    # flags win over the environment, which wins over the config file: each uvicorn worker reads them back
    for name, value in flags.items():
        if value is not None:
            os.environ[f"KGPIPE_API_{name.upper()}"] = str(value)
    if bundle is not None:
        os.environ["KGPIPE_BUNDLE"] = str(bundle)
    if store is not None:
        os.environ["KGPIPE_STORE"] = store
    limits = limits_from_settings()  # a bad KGPIPE_API_* value fails here, in one line
    _check_port_free(host, port)
    console.print(
        f"kgpipe API on http://{host}:{port} (docs at /docs; batches of up to {limits.max_batch}); "
        "models load in the background: GET /ready"
    )
    uvicorn.run(
        "pipeline.api:app_from_env", factory=True, host=host, port=port, workers=workers, log_level="warning"
    )


def _check_port_free(host: str, port: int) -> None:
    """One line now, rather than uvicorn's error after the models are loaded (and exit 3)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise typer.BadParameter(
            f"{host!r} is not an address of this machine ({e})", param_hint="'--host'"
        ) from e
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            s.bind(address)
        except OSError as e:
            raise typer.BadParameter(
                f"cannot listen on {host}:{port} ({e.strerror}); another server holds the port: "
                "stop it, or give another --port",
                param_hint="'--port'",
            ) from e
