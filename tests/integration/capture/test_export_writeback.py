"""The export's status write-back (`capture/export_writeback.py`) on real databases: what the
ERP's refusal leaves in the portal's error column (tests/export_world.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests import helpers as h
from tests.export_world import World

SECRET = "s3cr3t-Tok3n"


@pytest.mark.postgres
def test_the_erps_message_is_written_back_without_the_sheets_secrets(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    """The ERP refuses an order with a message that repeats a value which is also a secret of
    the sheet (here the ERP's password): the portal's error column and the record error hold
    the message with the secret masked."""
    w = World(pg_database(), pg_database(), tmp_path)
    try:
        h.execute(
            w.erp,
            "CREATE FUNCTION refuse_vip() RETURNS trigger AS $$ BEGIN "
            "IF NEW.customer LIKE 'vip%' THEN RAISE EXCEPTION 'no vip here: %', NEW.customer; END IF; "
            "RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse_vip BEFORE INSERT OR UPDATE ON sales_order "
            "FOR EACH ROW EXECUTE FUNCTION refuse_vip()",
        )
        sheet = tmp_path / "sheet.yaml"
        text = sheet.read_text()
        erp_url = f'erp: {{url: "{w.erp}"}}'
        assert erp_url in text
        with_password = w.erp.replace("postgres@", "postgres:${ERP_PASSWORD}@", 1)  # trust: any password
        sheet.write_text(text.replace(erp_url, f'erp: {{url: "{with_password}"}}'))
        w.env = {"ERP_PASSWORD": SECRET}
        w.run("seed")
        w.order(1, customer=f"vip {SECRET}", exported=0)
        w.order(2)
        ran = w.run()
        assert ran.counts.written == 1 and ran.counts.rejected == 1, ran.message
        flag, status, error, _ = w.states()[1]
        assert (flag, status) == (0, "failed")
        assert "no vip here: vip " in error and SECRET not in error
        stored = w.store.history.record_errors("orders", False, 10)
        assert len(stored) == 1 and SECRET not in str(stored[0]["message"])
        assert "no vip here" in str(stored[0]["message"])
    finally:
        w.close()
