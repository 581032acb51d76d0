"""`mapsync demo`: a sample ERP and portal (SQLite), synced, to show what mapsync does."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mapsync import demo as demo_mod
from mapsync.cli.common import Exit, app, handled, out


@app.command()
def demo(
    folder: Annotated[Path, typer.Option("--dir", help="Where to build the demo.")] = Path("mapsync-demo"),
) -> None:
    """Build a sample ERP and portal (SQLite), seed, change rows, sync, and show what happened."""
    with handled():
        code = demo_mod.run(folder, out)
    if code:
        raise Exit(code)
