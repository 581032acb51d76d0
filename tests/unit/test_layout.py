"""The test tree mirrors the source tree, so a module's tests are found from its path.

`src/mapsync/<package>/<module>.py` is tested in `tests/unit/<package>/test_<module>[_<topic>].py`
(in-process) and/or `tests/integration/<package>/test_<module>[_<topic>].py` (real PostgreSQL,
MariaDB, HTTP servers, processes); `tests/contract/` holds one suite per role (ports.py) that every
implementation runs; `tests/e2e/` holds the user-level scenarios of the `mapsync` command.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import ROOT

TESTS = ROOT / "tests"
SRC = ROOT / "src" / "mapsync"
TIERS = ("unit", "contract", "integration", "e2e", "browser")
# cross-cutting checks with no module of their own
NOT_MIRRORED = {"test_imports.py", "test_layout.py"}


def _module_for(test_file: Path, tier: str) -> Path | None:
    """The source module a mirrored test file belongs to, or None."""
    package = SRC.joinpath(*test_file.parent.relative_to(TESTS / tier).parts)
    stem = test_file.stem.removeprefix("test_")
    for module in sorted(package.glob("*.py"), key=lambda p: -len(p.stem)):
        if module.stem != "__init__" and (stem == module.stem or stem.startswith(module.stem + "_")):
            return module
    return None


def test_no_test_file_sits_outside_a_tier() -> None:
    stray = sorted(p.name for p in TESTS.glob("test_*.py"))
    assert stray == [], f"put these under tests/{{{','.join(TIERS)}}}/: {stray}"
    assert sorted(p.name for p in TESTS.iterdir() if p.is_dir() and (p / "__init__.py").exists()) == sorted(
        TIERS
    )


@pytest.mark.parametrize("tier", ["unit", "integration"])
def test_unit_and_integration_files_mirror_the_source_tree(tier: str) -> None:
    orphans = [
        str(p.relative_to(TESTS))
        for p in sorted((TESTS / tier).rglob("test_*.py"))
        if p.name not in NOT_MIRRORED and _module_for(p, tier) is None
    ]
    assert orphans == [], f"name each after the module it tests (src/mapsync/<same path>): {orphans}"


def test_the_mirror_finds_a_known_module() -> None:
    """The rule above is not vacuous: it maps real files to real modules and refuses a stray name."""
    assert (
        _module_for(TESTS / "integration" / "capture" / "test_queue.py", "integration")
        == SRC / "capture" / "queue.py"
    )
    assert _module_for(TESTS / "unit" / "test_transforms_reports.py", "unit") == SRC / "transforms.py"
    assert _module_for(TESTS / "unit" / "test_nothing_like_it.py", "unit") is None


@pytest.mark.xdist_group("layout_probe")
def test_xdist_groups_are_honoured(request: pytest.FixtureRequest) -> None:
    """`--dist loadgroup` keeps an `xdist_group` on one worker only if xdist can tag the test's id
    (`<id>@<group>`); pytest 9.2 stopped letting it, silently (pyproject.toml pins below it). Tests
    that share a server-wide setting or a module's fixture rely on the grouping."""
    if request.config.getoption("dist", "no") == "no" and not request.config.getoption("loadgroup", False):
        pytest.skip("not run by pytest-xdist workers (-n0): nothing to group")
    assert request.node.nodeid.endswith("@layout_probe"), request.node.nodeid
