"""Shared pieces of the sheet models."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

Name = Annotated[str, Field(min_length=1, max_length=128)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class ChangesModel(Model):
    """A `changes:` section, with its capture method's facts that `validate` needs as data
    (the capture classes declare the same in their `Capabilities`; tests/unit/test_ports.py holds
    them equal): whether the method ever sends deletes, and whether this configuration does."""

    can_emit_deletes: ClassVar[bool] = True

    def emits_deletes(self) -> bool:
        return self.can_emit_deletes


def as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value
