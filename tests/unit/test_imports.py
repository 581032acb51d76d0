"""The import graph stays as docs/design.md draws it: no cycles among mapsync's modules, the
import-linter contracts in pyproject.toml hold, and the commands that need no connection
(`--help`, `validate`) load none of the heavy HTTP and columnar libraries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

import mapsync

ROOT = Path(__file__).resolve().parents[2]
HEAVY = (
    "httpx",
    "fastapi",
    "uvicorn",
    "starlette",
    "pyarrow",
    "pgpq",
    "adbc_driver_manager",
    "adbc_driver_sqlite",
)

# runs `mapsync ARGS` in this interpreter, then prints the heavy top-level packages it loaded
RUNNER = """
import json, runpy, sys
sys.argv = ["mapsync", *sys.argv[1:]]
code = 0
try:
    runpy.run_module("mapsync", run_name="__main__")
except SystemExit as exc:
    code = exc.code
print(json.dumps([code, sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY))]))
"""


def _loaded_by(*args: str) -> tuple[int, list[str]]:
    """(exit code, heavy packages loaded) of `mapsync ARGS` in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": str(Path(mapsync.__file__).parents[1])}
    env.update(ERP_PASSWORD="x", CIM_AUTH_KEY="x", CIM_PASSWORD="x")  # the example sheet's secrets
    done = subprocess.run(
        [sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{RUNNER}", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    code, loaded = json.loads(done.stdout.strip().splitlines()[-1])
    return code, loaded


def test_help_and_validate_load_no_http_or_columnar_library() -> None:
    assert _loaded_by("--help") == (0, [])
    # a REST (CIMcloud) sheet: validating it connects to nothing, so it loads no HTTP client
    example = ROOT / "src" / "mapsync" / "examples" / "cimcloud.yaml"
    assert _loaded_by("validate", str(example)) == (0, [])


def test_no_module_of_mapsync_imports_itself_through_others() -> None:
    graph = grimp.build_graph("mapsync", cache_dir=None)
    cycles = sorted(
        (importer, imported)
        for importer in graph.modules
        for imported in graph.find_modules_directly_imported_by(importer)
        if graph.chain_exists(importer=imported, imported=importer)
    )
    assert cycles == [], f"import cycles through these imports: {cycles}"


def test_the_import_contracts_hold() -> None:
    """Layers, independent connectors (CIMcloud builds on REST), CLI commands independent."""
    # in its own process: import-linter reconfigures logging, which would silence the log
    # handlers of the tests that run after this one in the same process
    code = (
        "import sys; from importlinter.cli import lint_imports; "
        f"sys.exit(lint_imports(config_filename={str(ROOT / 'pyproject.toml')!r}, no_cache=True, no_logo=True))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_product_module_is_kept_from_the_dev_only_parts() -> None:
    """The `testing` contract names every top-level module but the CLI, the demo and
    mapsync.testing itself, so a new module cannot import the dev-only parts unnoticed."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (contract,) = (c for c in config["tool"]["importlinter"]["contracts"] if c["id"] == "testing")
    top = {
        f"mapsync.{p.stem}"
        for p in (ROOT / "src" / "mapsync").iterdir()
        if (p.suffix == ".py" or (p / "__init__.py").exists()) and p.stem not in ("__init__", "__main__")
    }
    assert contract["forbidden_modules"] == ["mapsync.testing"]
    assert set(contract["source_modules"]) == top - {"mapsync.cli", "mapsync.demo", "mapsync.testing"}
