"""A daemon's reload (SIGHUP) and the identity rule (`sheet/identity.py`): a sync whose source,
destination, key or fields changed since its seed keeps its old configuration, or does not run,
until `seed --again` or `state reset`. A mixin of `daemon.Daemon`."""

from __future__ import annotations

import datetime as dt
import logging

from mapsync import errors
from mapsync.daemon_process import scheduled, with_daemon_lease
from mapsync.daemon_worker import Worker
from mapsync.sheet import identity as identities
from mapsync.sheet import loader
from mapsync.sheet.loader import LoadedSheet
from mapsync.state.ports import Store

log = logging.getLogger("mapsync.daemon")


class Reloading:
    """Reload and identity holds of a daemon (see the module's docstring)."""

    store: Store
    loaded: LoadedSheet
    names: list[str]
    workers: dict[str, Worker]
    handled: dict[tuple[str, str], dt.datetime | None]
    refused: dict[str, LoadedSheet]
    retired: list[Worker]
    _named: bool

    def _add(self, name: str, loaded: LoadedSheet, start: bool = True) -> Worker:
        raise NotImplementedError  # Daemon's

    def _set_identity(self, loaded: LoadedSheet) -> None:
        raise NotImplementedError  # Daemon's

    def redact(self, text: str) -> str:
        raise NotImplementedError  # Daemon's

    def _identity_hold(
        self, name: str, loaded: LoadedSheet, quiet: bool = False, previous: str | None = None
    ) -> str | None:
        """Why sync `name` must not run with `loaded`'s configuration (its state was seeded as
        another sync), or None; `previous` while the store cannot tell (it stays held). The
        engine checks the same under the lease (`Engine.same_sync`), so a store away here never
        lets such a run through."""
        try:
            stored = self.store.cursors(name).get(identities.CURSOR)
        except errors.StateError:
            return previous
        if stored is None or stored == identities.identity(loaded.sheet, name):
            return None
        why = (
            f"sync {name}: its source, destination, key or fields changed since its seed "
            f"({loaded.where('syncs', name)}): its state belongs to the old configuration; run "
            f"`mapsync seed --sync {name} --again` to re-read it under the new one, or `mapsync state "
            f"reset --sync {name}` to start over"
        )
        if not quiet:
            log.error("daemon_sync_held", extra={"action": "daemon_sync_held", "sync": name, "error": why})
        return why

    def reload(self) -> bool:
        """Read the sheet again (SIGHUP). Invalid: keep the old one. A sync whose identity changed
        keeps its old configuration (refused) until a seed or reset makes the new one its own."""
        try:
            new = with_daemon_lease(loader.load(self.loaded.path))
        except errors.ConfigError as exc:
            log.error(
                "daemon_reload_refused",
                extra={"action": "daemon_reload_refused", "error": self.redact(str(exc))},
            )
            return False
        names = [
            n
            for n in (self.names if self._named else list(new.sheet.syncs))
            if n in new.sheet.syncs and (n in self.workers or scheduled(new, n))
        ]
        # first every read of the store (a store away now leaves everything as it was) …
        refused = {
            name
            for name in names
            if name in self.workers
            and identities.changed(self.workers[name].loaded.sheet, new.sheet, name)
            and not (self._identity_hold(name, new, quiet=True) is None and self._reseeded(name, new))
        }
        # … then the changes
        for name in list(self.workers):
            if name not in names:  # gone from the sheet: stop its worker after its run
                retired = self.workers.pop(name)
                retired.stopping.set()
                retired.wake.set()
                self.retired.append(retired)
        for name in names:
            w = self.workers.get(name)
            if w is None:
                self._add(name, new)
            elif name in refused:
                log.error(
                    "daemon_reload_refused",
                    extra={
                        "action": "daemon_reload_refused",
                        "sync": name,
                        "error": (
                            f"sync {name}: the new sheet changes its source, destination, key or "
                            f"fields ({new.where('syncs', name)}); it keeps running the old "
                            f"configuration until `mapsync seed --sync {name} --again` or "
                            f"`mapsync state reset --sync {name}`"
                        ),
                    },
                )
                self.refused[name] = new
            else:
                w.loaded = new
                self.refused.pop(name, None)
        self.loaded = new
        self._set_identity(new)
        self.handled = {k: v for k, v in self.handled.items() if k[0] in self.workers}
        log.info("daemon_reloaded", extra={"action": "daemon_reloaded", "syncs": ",".join(names)})
        return True

    def _reseeded(self, name: str, new: LoadedSheet) -> bool:
        """Whether the state of `name` now belongs to `new`: seeded under it (its identity
        stored), or reset (no cursors at all)."""
        cursors = self.store.cursors(name)
        return not cursors or cursors.get(identities.CURSOR) == identities.identity(new.sheet, name)
