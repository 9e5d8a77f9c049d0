"""``appliance user add`` (password from standard input when it is not a terminal), and
``appliance bench web`` on a small catalog."""

import io
import json
import sys

import yaml

from appliance.catalog import users
from appliance.catalog.db import Catalog
from appliance.cli import main


def _config(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"state_dir": "state", "vault": {"backend": "directory", "path": "vault"}}))
    return path


def test_user_add_reads_the_password_from_stdin_and_is_audited(tmp_path, monkeypatch, capsys):
    config = _config(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.StringIO("first admin password\n"))
    assert main(["user", "add", "chief", "--role", "admin", "--config", str(config)]) == 0
    assert "chief: admin" in capsys.readouterr().out
    catalog = Catalog(tmp_path / "vault" / "catalog" / "catalog.sqlite")
    user, digest = catalog.run(users.credentials, "chief")
    assert user.role == "admin" and users.verify_password(digest, "first admin password")
    assert catalog.run(lambda c: c.execute("SELECT action FROM audit_log WHERE subject = 'chief'")
                       .fetchone()[0]) == "user.add"
    catalog.close()
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    assert main(["user", "add", "weak", "--role", "leader", "--config", str(config)]) == 2
    assert "too short" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO("officer password\n"))
    assert main(["user", "add", "zw", "--role", "officer", "--config", str(config)]) == 2
    assert "--officer" in capsys.readouterr().err


def test_bench_web_on_a_small_catalog(tmp_path, capsys):
    assert main(["bench", "web", "--recordings", "4000", "--queries", "3", "--dir", str(tmp_path / "b")]) in (0, 1)
    result = json.loads(capsys.readouterr().out)
    assert result["recordings"] == 4000 and len(result["per_kind"]) == 13 and result["p95_ms"] > 0
