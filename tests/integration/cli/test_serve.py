"""`mapsync serve` (mapsync.cli.serve): refuses anonymous reads beyond loopback, before listening."""

from __future__ import annotations

from pathlib import Path

from tests import helpers as h
from tests import web_world as w


def test_serve_refuses_anonymous_reads_on_a_non_loopback_host(tmp_path: Path) -> None:
    for _ in w.web_world(tmp_path, w.DEFAULT_WEB + "  anonymous_reads: true\n"):
        pass
    done = h.mapsync("serve", str(tmp_path / "sheet.yaml"), "--host", "0.0.0.0", cwd=tmp_path, env=w.ENV)
    assert done.returncode == 2
    assert "anonymous reads are only served on a loopback" in done.stderr
    assert f"{tmp_path / 'sheet.yaml'}:" in done.stderr  # names the sheet's line
