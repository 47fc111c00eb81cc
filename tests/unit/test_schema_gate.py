from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ops.schema_gate import check, lock
from topics.schemas import SchemaStore, read_lock

TOPIC = "payments.transfer.requested.v1"


def edit(avro_dir, change):
    path = avro_dir / f"{TOPIC}.avsc"
    schema = json.loads(path.read_text())
    change(schema["fields"])
    path.write_text(json.dumps(schema, indent=2))


def field(fields, name):
    return next(f for f in fields if f["name"] == name)


def findings_after(avro_dir, change):
    edit(avro_dir, change)
    return [f.message for f in check(SchemaStore(avro_dir), read_lock())]


def test_the_repository_passes_the_gate(store):
    assert check(store, read_lock()) == []


def test_adding_a_field_with_a_default_is_compatible_but_must_be_locked(avro_copy):
    messages = findings_after(
        avro_copy, lambda fs: fs.append({"name": "memo", "type": ["null", "string"], "default": None})
    )
    assert len(messages) == 1
    assert "not locked" in messages[0]


def test_removing_a_field_without_default_fails_naming_the_field(avro_copy):
    messages = findings_after(
        avro_copy,
        lambda fs: fs.remove(field(fs, "transfer_id")) or fs.append({"name": "x", "type": "string"}),
    )
    assert any("field x" in m and "reader_field_missing_default_value" in m for m in messages), messages
    assert all(".v2.avsc" in m for m in messages if "compatible" in m)


def test_changing_a_type_fails(avro_copy):
    messages = findings_after(avro_copy, lambda fs: field(fs, "transfer_id").update(type="long"))
    assert any("field transfer_id" in m and "type_mismatch" in m for m in messages), messages
    assert any(f"avro/{TOPIC.removesuffix('.v1')}.v2.avsc" in m for m in messages)


def test_renaming_without_alias_fails(avro_copy):
    messages = findings_after(avro_copy, lambda fs: field(fs, "transfer_id").update(name="payment_id"))
    assert any("field payment_id" in m and "not backward compatible" in m for m in messages), messages


def test_renaming_with_alias_is_compatible(avro_copy):
    messages = findings_after(
        avro_copy, lambda fs: field(fs, "transfer_id").update(name="payment_id", aliases=["transfer_id"])
    )
    assert all("not backward compatible" not in m for m in messages), messages


def test_a_released_topic_whose_schema_vanished_fails(avro_copy):
    (avro_copy / f"{TOPIC}.avsc").unlink()
    messages = [f.message for f in check(SchemaStore(avro_copy), read_lock())]
    assert any(f"avro/{TOPIC}.avsc is gone" in m for m in messages)


def test_lock_records_a_compatible_change_and_refuses_a_breaking_one(avro_copy, tmp_path):
    lock_file = tmp_path / "schemas.lock.json"
    lock_file.write_text(json.dumps({"topics": read_lock()}))
    edit(avro_copy, lambda fs: fs.append({"name": "memo", "type": ["null", "string"], "default": None}))
    locked, refused = lock(SchemaStore(avro_copy), lock_file)
    assert (locked, refused) == ([TOPIC], [])
    assert len(read_lock(lock_file)[TOPIC]) == len(read_lock()[TOPIC]) + 1
    assert check(SchemaStore(avro_copy), read_lock(lock_file)) == []
    edit(avro_copy, lambda fs: field(fs, "memo").update(type="long", default=0))
    locked, refused = lock(SchemaStore(avro_copy), lock_file)
    assert locked == []
    assert refused and "field memo" in refused[0].message


def run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_cli_check_passes_on_the_repo_and_fails_on_an_incompatible_edit(avro_copy):
    ok = run_cli("schemas", "check")
    assert ok.returncode == 0, ok.stderr
    assert "schema gate: ok" in ok.stdout
    edit(avro_copy, lambda fs: field(fs, "rail").update(type="string"))
    bad = run_cli("schemas", "check", env={"LEDGERSTREAM_AVRO_DIR": str(avro_copy)})
    assert bad.returncode == 1
    assert f"{TOPIC}: not backward compatible with released version 1: field rail" in bad.stderr
    assert "FAILED" in bad.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["topics", "apply", "--profile", "staging"],
        ["stack", "restart"],
        ["demo", "--events", "-3"],
        ["nothing"],
    ],
)
def test_a_wrong_argument_gets_one_line_not_a_traceback(argv):
    done = run_cli(*argv)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "error:" in lines[0]
    assert "Traceback" not in done.stderr


def test_a_bad_setting_gets_one_line():
    done = run_cli("topics", "list", env={"LEDGERSTREAM_ENVIRONMENT": "production"})
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0
    assert "LEDGERSTREAM_ENVIRONMENT" in done.stderr


def test_help_explains_every_command():
    for argv in (["--help"], ["stack", "--help"], ["topics", "apply", "--help"], ["schemas", "--help"]):
        done = run_cli(*argv)
        assert done.returncode == 0
        assert "usage: ledgerstream" in done.stdout


def test_settings_ignore_unrelated_home_and_environment_variables(monkeypatch):
    """Regression: the `home` and `environment` fields once read $HOME and $ENVIRONMENT."""
    from topics.settings import REPO_ROOT, Settings

    monkeypatch.setenv("HOME", "/somewhere/else")
    monkeypatch.setenv("ENVIRONMENT", "live")
    settings = Settings()
    assert settings.home == REPO_ROOT
    assert settings.environment == "sandbox"
