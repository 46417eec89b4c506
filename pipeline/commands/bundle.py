"""`kgpipe bundle ...` and `kgpipe demo`: build and check bundles, and run the main job on one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pipeline.commands.common import (
    BundleOpt,
    ForceOpt,
    app,
    bundle_app,
    console,
    console_for,
)


@bundle_app.command("build")
def bundle_build(
    out: Annotated[Path, typer.Option("--out", "-o", help="bundle folder to write")],
    kg_path: Annotated[Path | None, typer.Option("--kg", help="KG (default: the default bundle's)")] = None,
    transe: Annotated[
        Path | None, typer.Option("--transe", help="TransE checkpoint trained on that KG (`kgpipe kg train`)")
    ] = None,
    linker: Annotated[
        Path | None, typer.Option("--linker", help="linker folder built for that KG (`kgpipe link train`)")
    ] = None,
    classifier: Annotated[
        list[str] | None,
        typer.Option(
            "--classifier", help="NAME=DIR: a fine-tuned encoder (`kgpipe encoder finetune`); repeatable"
        ),
    ] = None,
    store: Annotated[
        Path | None,
        typer.Option("--store", help="a FAISS store folder to serve searches from (`kgpipe index`)"),
    ] = None,
    relations: Annotated[
        Path | None,
        typer.Option(
            "--relations",
            help="a relation extraction model (`kgpipe relations train`; default: the default bundle's)",
        ),
    ] = None,
    force: ForceOpt = False,
) -> None:
    """Write a bundle: the KG, TransE, the linker, classifiers, the relation model and a store in one checksummed folder.

    Example: kgpipe bundle build --out my-bundle --store out/store --classifier topic=out/topic
    """
    from pipeline.bundle import build, bundle_info

    classifiers = {}
    for item in classifier or []:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder or "/" in name:
            raise typer.BadParameter(f"expected NAME=DIR, got {item!r}", param_hint="'--classifier'")
        classifiers[name] = Path(folder)
    manifest = build(out, kg_path, transe, linker, classifiers, force, store=store, relations=relations)
    info = bundle_info(manifest)
    console.print(
        f"wrote bundle {out}: "
        + ", ".join(f"{name} ({p['files']} files)" for name, p in info["parts"].items())
    )


@bundle_app.command("info")
def bundle_info_command(
    path: Annotated[Path, typer.Argument(metavar="DIR", help="bundle folder")],
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Check every file of a bundle against its checksum and show its parts.

    Example: kgpipe bundle info data
    """
    from kg.manifest import read_manifest
    from pipeline.bundle import bundle_info

    manifest, _ = read_manifest(path, verify=True)
    info = bundle_info(manifest)
    if as_json:
        print(json.dumps(info))
        return
    table = Table(
        title=f"bundle {path} (format {info['format_version']}, kgpipe {info.get('kgpipe_version')})"
    )
    for column in ("part", "folder", "files", "sha256", "source"):
        table.add_column(column)
    for name, p in info["parts"].items():
        table.add_row(name, p["path"], str(p["files"]), p["sha256"][:16], p["source"])
    console_for().print(table)
    console.print("every file matches its checksum")


@app.command("demo")
def demo(
    kg_path: Annotated[Path | None, typer.Option("--kg", help="KG to use (default: the bundle's)")] = None,
    bundle: BundleOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for the demo's outputs")] = Path(
        "demo_output"
    ),
) -> None:
    """Run the main job on the bundled defaults and show what kgpipe does.

    Example: kgpipe demo --out demo_output
    """
    from pipeline.demo import run_demo

    run_demo(kg_path, bundle, out)
