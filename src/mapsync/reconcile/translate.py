"""Group translation of a business check: the source's group values (an ERP customer number) as
the destination names them (the portal's account id), through the field rules of the sync the
check names.

Only invertible rules translate (a rename, the key, a one-to-one `map:`, `cast: str|int`); the
analysis and the exact list live in `sheet.reconcile_checks` (validate refuses the same sheets).

Group values are compared as text (`group_text`): NULL → `<null>`; integers as digits; decimals
without trailing fractional zeros or exponent (`7.00` → `7`); booleans `1`/`0`; dates and times
ISO 8601; binary as hex; text without trailing spaces (CHAR(n) pads, PAD SPACE collations ignore
them). A map is looked up by that text, as the sync looks it up by `str(value)`.
"""

from __future__ import annotations

from mapsync import errors
from mapsync.sheet import models
from mapsync.sheet.reconcile_checks import (
    NULL_TEXT as NULL_TEXT,
)
from mapsync.sheet.reconcile_checks import (
    GroupRule,
    Untranslatable,
    group_rules,
)
from mapsync.sheet.reconcile_checks import (
    group_text as group_text,
)
from mapsync.sheet.reconcile_models import ReconcileCheck

Group = tuple[str, ...]


class Translator:
    """Turns a source group (tuple of group texts) into the destination's group. Without rules
    (a check naming no sync) groups pass as they are."""

    def __init__(self, rules: list[GroupRule] | None = None) -> None:
        self.rules = rules
        self._inverse: list[dict[str, str] | None] = [
            None if r.map is None else {v: k for k, v in r.map.items()} for r in rules or []
        ]
        self.unlisted: dict[str, int] = {}  # field → source values its map does not list (kept as they are)

    @classmethod
    def for_check(cls, sheet: models.Sheet, check: ReconcileCheck, name: str = "check") -> Translator:
        """The translator of a check, or ConfigError naming the check, the group column, the sync
        and the field and why it cannot be inverted."""
        try:
            return cls(group_rules(sheet, name, check))
        except Untranslatable as exc:
            raise errors.ConfigError(str(exc)) from None

    def __call__(self, group: Group) -> Group:
        if self.rules is None:
            return group
        return tuple(self._one(rule, value) for rule, value in zip(self.rules, group, strict=True))

    def _one(self, rule: GroupRule, value: str) -> str:
        if rule.map is not None:
            if value == NULL_TEXT:
                return value  # the sync's map hands NULL on as NULL
            found = rule.map.get(value)
            if found is not None:
                return found
            # `reject`: the sync never delivered this group's rows; `keep`: it sent the value as is.
            # Either way it is compared as it is (and counted, so the report can say so)
            self.unlisted[rule.field or rule.dest] = self.unlisted.get(rule.field or rule.dest, 0) + 1
        if rule.cast_int and value != NULL_TEXT:
            try:
                return str(int(value))
            except ValueError:
                return value
        return value

    def inverse(self, group: Group) -> Group:
        """The source group values of a destination group (for a repair finding the group's
        source rows): the map read backwards; a value it does not list passes as it is."""
        if self.rules is None:
            return group
        out = []
        for back, value in zip(self._inverse, group, strict=True):
            out.append(value if back is None else back.get(value, value))
        return tuple(out)

    def notes(self) -> list[str]:
        """What the report should say about values no map listed."""
        return [
            f"{n} source group value(s) not in the map of field {field}: compared untranslated"
            for field, n in sorted(self.unlisted.items())
        ]
