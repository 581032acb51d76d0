"""docs/sheet.md documents every model field (key, description, type, default) and nothing else,
and is exactly what `python -m mapsync.sheet.reference` generates from the models."""

from __future__ import annotations

import re
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from mapsync.sheet import models, reference

DOC = Path(__file__).resolve().parents[3] / "docs" / "sheet.md"


def _all_models() -> dict[str, type[BaseModel]]:
    """Every model reachable from Sheet, walked independently of the reference module."""
    found: dict[str, type[BaseModel]] = {}

    def inner(annotation: Any) -> list[type[BaseModel]]:
        if isinstance(annotation, type):
            return [annotation] if issubclass(annotation, BaseModel) else []
        return [m for arg in typing.get_args(annotation) for m in inner(arg)]

    def visit(model: type[BaseModel]) -> None:
        if model.__name__ in found:
            return
        found[model.__name__] = model
        for info in model.model_fields.values():
            for sub in inner(info.annotation):
                visit(sub)

    visit(models.Sheet)
    return found


def _sections(text: str) -> dict[str, dict[str, str]]:
    """Model name → {documented key → its table row}, parsed from the markdown."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in text.splitlines():
        model = re.fullmatch(r"Model: `(\w+)`\.", line)
        if model:
            assert model.group(1) not in sections, f"{model.group(1)} documented twice"
            current = sections[model.group(1)] = {}
            continue
        if line.startswith("## "):
            current = None
        row = re.match(r"\| `([^`]+)` \|", line)
        if row and current is not None:
            assert row.group(1) not in current, f"{row.group(1)} listed twice"
            current[row.group(1)] = line
    return sections


@pytest.fixture(scope="module")
def doc() -> str:
    assert DOC.exists(), "docs/sheet.md is missing: run `python -m mapsync.sheet.reference`"
    return DOC.read_text(encoding="utf-8")


def test_every_model_has_a_section_and_every_field_a_row(doc: str) -> None:
    sections = _sections(doc)
    everything = _all_models()
    assert len(everything) >= 15  # the walk itself found the nested models
    for name, model in everything.items():
        assert name in sections, f"model {name} has no section in docs/sheet.md"
        rows = sections[name]
        for field_name, info in model.model_fields.items():
            key = info.alias or field_name
            assert key in rows, f"{name}.{key} is not documented"
            assert info.description, f"{name}.{key} has no description in the model"
            description = " ".join(info.description.split()).replace("|", "\\|")
            assert description in rows[key], f"{name}.{key}: description differs"
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", rows[key])[1:-1]]
            assert len(cells) == 4, rows[key]
            type_, default = cells[1], cells[2]
            assert type_, f"{name}.{key} has no type"
            if info.is_required():
                assert default == "**required**", f"{name}.{key} is required"
            else:
                assert default != "**required**" and default, f"{name}.{key} has a default"


def test_every_documented_key_exists_in_the_models(doc: str) -> None:
    everything = _all_models()
    for name, rows in _sections(doc).items():
        assert name in everything, f"docs/sheet.md documents unknown model {name}"
        keys = {info.alias or n for n, info in everything[name].model_fields.items()}
        unknown = set(rows) - keys
        assert not unknown, f"docs/sheet.md documents {name} keys that do not exist: {unknown}"


def test_yaml_keys_are_used_not_python_names(doc: str) -> None:
    sections = _sections(doc)
    assert "from" in sections["SyncConfig"] and "from_" not in sections["SyncConfig"]
    assert "from" in sections["FieldRule"]
    assert "from" in sections["KeyMap"]


def test_types_and_defaults_are_shown(doc: str) -> None:
    sections = _sections(doc)
    assert "| `batch` | integer (> 0, ≤ 100000) | `500` |" in sections["DeliveryConfig"]["batch"]
    assert "| `lag` | duration | `5s` |" in sections["WatermarkChanges"]["lag"]
    assert "`reject` or `default` or `keep` | `reject`" in sections["FieldRule"]["on_unknown"]
    assert "text or list of text" in sections["KeyMap"]["from"]
    assert "[FieldRule](#fieldrule)" in sections["SyncConfig"]["fields"]
    assert "**required**" in sections["SyncConfig"]["changes"]
    assert 'id="fieldrule"' in doc


def test_doc_is_the_generated_text() -> None:
    """The committed reference equals a fresh rendering: regenerate it when a model changes."""
    assert DOC.read_text(encoding="utf-8") == reference.render(), (
        "docs/sheet.md is out of date: run `python -m mapsync.sheet.reference`"
    )


def test_reference_entry_point_writes_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "sheet.md"
    assert reference.main(["--check", str(target)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert reference.main([str(target)]) == 0
    assert target.read_text(encoding="utf-8") == reference.render()
    assert reference.main(["--check", str(target)]) == 0
    # and as `python -m mapsync.sheet.reference`
    result = subprocess.run(
        [sys.executable, "-m", "mapsync.sheet.reference", "--check", str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout


@pytest.mark.parametrize("model", list(reference.EXAMPLES), ids=lambda m: m.__name__)
def test_examples_in_the_reference_are_valid(model: type[BaseModel]) -> None:
    example = reference.EXAMPLES[model]
    data = yaml.safe_load(example.text)
    values = list(data.values()) if example.many else [data]
    assert values
    for value in values:
        model.model_validate(value)


def test_every_model_has_an_example() -> None:
    assert set(reference.EXAMPLES) == set(_all_models().values())
