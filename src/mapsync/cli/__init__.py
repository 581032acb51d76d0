"""The `mapsync` command line. Exit codes: 0 ok, 1 some records or runs failed, 2 usage or config.

`common` holds the app, the option types and the shared helpers; each command module imports it
(and lower layers), never another command module. Importing this package registers them all, in
the order `mapsync --help` lists them.
"""

# isort: off
from mapsync.cli import start, run, daemon, demo  # noqa: F401  (registration, in --help order)
from mapsync.cli import changelog, check, sandbox, serve, triggers, unmapped, views  # noqa: F401
from mapsync.cli import control, workers, monitor, alerts, audit, purge, trace, export, reconcile  # noqa: F401
from mapsync.cli import web  # noqa: F401

# isort: on
from mapsync.cli.common import app as app
from mapsync.cli.common import main as main
