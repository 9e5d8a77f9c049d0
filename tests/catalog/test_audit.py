"""The audit log's hash chain: any edit, insertion or deletion is found and named."""

import sqlite3

import pytest

from appliance.catalog import audit
from appliance.catalog.db import Catalog


@pytest.fixture
def catalog(tmp_path):
    c = Catalog(tmp_path / "catalog.sqlite")
    for i in range(5):
        c.run(audit.append, "tester", "thing.done", f"item-{i}", {"n": i, "名称": "中文"})
    yield c
    c.close()


def test_intact_chain_verifies(catalog):
    state = catalog.run(audit.verify_chain)
    assert state.ok and state.rows == 5
    assert state.head == catalog.run(audit.head)


def test_rows_cannot_be_updated_or_deleted_through_sql(catalog):
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        catalog.run(lambda c: c.execute("UPDATE audit_log SET actor = 'x' WHERE seq = 2"))
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        catalog.run(lambda c: c.execute("DELETE FROM audit_log WHERE seq = 2"))


def _tamper(catalog, sql):
    # Someone with the file drops the triggers first; the chain must still tell.
    def go(c):
        c.execute("DROP TRIGGER audit_log_no_update")
        c.execute("DROP TRIGGER audit_log_no_delete")
        c.execute(sql)
    catalog.run(go)


def test_edited_row_is_named(catalog):
    _tamper(catalog, "UPDATE audit_log SET details = '{}' WHERE seq = 3")
    state = catalog.run(audit.verify_chain)
    assert not state.ok and state.first_broken == 3 and "changed" in state.reason


def test_deleted_row_is_named(catalog):
    _tamper(catalog, "DELETE FROM audit_log WHERE seq = 2")
    state = catalog.run(audit.verify_chain)
    assert not state.ok and state.first_broken == 3 and "missing" in state.reason


def test_rehashed_forgery_breaks_the_next_link(catalog):
    def forge(c):
        row = c.execute("SELECT * FROM audit_log WHERE seq = 2").fetchone()
        new_hash = audit._row_hash(2, row["at"], "forger", row["action"], row["subject"],
                                   row["details"], row["prev_hash"])
        c.execute("UPDATE audit_log SET actor = 'forger', hash = ? WHERE seq = 2", (new_hash,))
    _tamper(catalog, "SELECT 1")
    catalog.run(forge)
    state = catalog.run(audit.verify_chain)
    assert not state.ok and state.first_broken == 3


def test_catalog_refuses_newer_schema(tmp_path):
    path = tmp_path / "c.sqlite"
    Catalog(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    from appliance.errors import CatalogError
    with pytest.raises(CatalogError, match="newer"):
        Catalog(path)
