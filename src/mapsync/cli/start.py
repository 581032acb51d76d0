"""`mapsync version`, `init` and `validate`: the commands that start with a sheet."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

from mapsync import __version__, errors
from mapsync.cli.common import Exit, JsonOpt, SheetArg, app, fail, json_out, out
from mapsync.sheet import loader


@app.command()
def version() -> None:
    """Print the version."""
    out.print(__version__)


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the example sheet.")] = Path("mapsync.yaml"),
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
    to: Annotated[
        str, typer.Option("--to", help="Destination of the example: `sql`, or `cimcloud` (a CIMcloud site).")
    ] = "sql",
) -> None:
    """Write a commented example mapping sheet to start from."""
    if path.exists() and not force:
        raise fail(f"{path} exists (use --force to overwrite)", 2)
    if to not in ("sql", "cimcloud"):
        raise fail("--to is `sql` or `cimcloud`", 2)
    example = "examples/cimcloud.yaml" if to == "cimcloud" else "examples/sheet.yaml"
    text = resources.files("mapsync").joinpath(example).read_text(encoding="utf-8")
    path.write_text(text, encoding="utf-8")
    out.print(f"wrote {path}: edit the connections and syncs, then `mapsync validate {path}`")


@app.command()
def validate(sheet: SheetArg, as_json: JsonOpt = False) -> None:
    """Check a sheet without connecting to anything: exit 0 if valid, 2 with every problem."""
    try:
        loaded = loader.load(sheet)
    except errors.ConfigError as exc:
        if as_json:
            details = exc.details or [
                {"file": str(sheet), "line": None, "column": None, "path": None, "message": str(exc)}
            ]
            json_out({"valid": False, "problems": details})
            raise Exit(2) from None
        raise fail(str(exc).replace("[", r"\["), 2) from None
    if as_json:
        json_out({"valid": True, "syncs": list(loaded.sheet.syncs)})
    else:
        out.print(f"{sheet}: valid ({len(loaded.sheet.syncs)} sync(s): {', '.join(loaded.sheet.syncs)})")
