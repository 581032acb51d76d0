"""Where a `map_from: {file: …}` may read, and how much.

A map file lives in the sheet's folder (or below it): a path that leaves it (`../x.csv`, an
absolute path, a symlink pointing out) is refused unless the rule says `allow_outside: true`.
Only a regular file is read (never a device such as `/dev/zero`, a FIFO or a folder), and at
most `max_bytes` of it. `problems` finds what it can when the sheet loads (`mapsync validate`,
with the sheet's `file:line`); `read` checks again when the map is read, and reads no further
than the cap.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from mapsync import errors
from mapsync.sheet import models

Path_ = tuple[str | int, ...]


def locate(source: models.MapSource, folder: Path) -> tuple[Path, str | None]:
    """The map file's path, and why it may not be read (None: it may, as far as the path goes)."""
    assert source.file is not None
    given = Path(source.file)
    full = given if given.is_absolute() else folder / given
    if source.allow_outside:
        return full, None
    if given.is_absolute():
        return full, (
            f"{source.file} is an absolute path; a map file is read from the sheet's folder "
            f"({folder}) or below it unless the rule says `allow_outside: true`"
        )
    if not full.resolve().is_relative_to(folder.resolve()):
        return full, (
            f"{source.file} is outside the sheet's folder ({folder}); a map file is read from "
            "that folder or below it unless the rule says `allow_outside: true`"
        )
    return full, None


def _refusal(source: models.MapSource, mode: int, size: int) -> str | None:
    if not stat.S_ISREG(mode):
        return f"{source.file} is not a regular file (a device, FIFO or folder is never read)"
    if size > source.max_bytes:
        return (
            f"{source.file} is {size:,} bytes, more than `max_bytes` ({source.max_bytes:,}); "
            "raise `max_bytes` if the file is meant to be that big"
        )
    return None


def problems(sheet: models.Sheet, folder: Path) -> list[tuple[Path_, str]]:
    """Map files outside the folder, not regular files or too big (a missing file is reported
    when the map is read)."""
    found: list[tuple[Path_, str]] = []
    for sync_name, sync in sheet.syncs.items():
        tables: list[tuple[Path_, dict[str, models.FieldRule]]] = [(("syncs", sync_name), sync.fields)]
        tables += [
            (("syncs", sync_name, "children", name), child.fields) for name, child in sync.children.items()
        ]
        for base, fields in tables:
            for field, spec in fields.items():
                if spec.map_from is None or spec.map_from.file is None:
                    continue
                where: Path_ = (*base, "fields", field, "map_from", "file")
                full, why = locate(spec.map_from, folder)
                if why is None:
                    try:
                        info = full.stat()
                    except OSError:
                        continue
                    why = _refusal(spec.map_from, info.st_mode, info.st_size)
                if why is not None:
                    found.append((where, why))
    return found


def read(source: models.MapSource, folder: Path, what: str) -> tuple[Path, bytes]:
    """The map file's path and bytes, after the same checks; ConfigError naming `what`."""
    full, why = locate(source, folder)
    if why is not None:
        raise errors.ConfigError(f"{what}: {why}")
    try:
        # non-blocking: opening a FIFO must not wait for a writer (it is then refused)
        fd = os.open(full, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise errors.ConfigError(f"{full}: cannot read the map file: {exc.strerror or exc}") from None
    info = os.fstat(fd)
    why = _refusal(source, info.st_mode, info.st_size)
    if why is not None:
        os.close(fd)
        raise errors.ConfigError(f"{what}: {why}")
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(source.max_bytes + 1)
    if len(data) > source.max_bytes:  # it grew since
        why = _refusal(source, info.st_mode, len(data))
    if why is not None:
        raise errors.ConfigError(f"{what}: {why}")
    return full, data
