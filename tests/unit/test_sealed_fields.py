"""Bank account details sealed field by field: each value opens only with its key, in its column,
unaltered; and only the components that seal or open them are given the key."""

from __future__ import annotations

import secrets

import pytest

from topics.fields import FieldSealError, key_id, open_field, seal_field

KEY = secrets.token_bytes(32)
WHERE = "transfer_requests.beneficiary_sealed"
IBAN = "GB33BUKB20201555555555"


def test_a_sealed_beneficiary_opens_to_itself_and_does_not_show_it():
    sealed = seal_field(KEY, IBAN, WHERE)
    assert sealed is not None and IBAN.encode() not in sealed
    assert sealed[1:9] == key_id(KEY), "the key that sealed it is named"
    assert open_field(KEY, sealed, WHERE) == IBAN
    assert seal_field(KEY, IBAN, WHERE) != sealed, "a fresh nonce each time: equal IBANs do not match"
    assert seal_field(KEY, None, WHERE) is None and open_field(KEY, None, WHERE) is None


def test_another_key_another_column_or_an_altered_byte_is_refused():
    sealed = seal_field(KEY, IBAN, WHERE)
    assert sealed is not None
    with pytest.raises(FieldSealError, match="sealed under key"):
        open_field(secrets.token_bytes(32), sealed, WHERE)
    with pytest.raises(FieldSealError, match="does not open"):
        open_field(KEY, sealed, "transactions.beneficiary_sealed")
    altered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(FieldSealError, match="does not open"):
        open_field(KEY, altered, WHERE)
    with pytest.raises(FieldSealError, match="not a sealed value"):
        open_field(KEY, IBAN.encode(), WHERE)


def test_a_live_deployment_without_its_field_key_refuses_to_start(tmp_path, monkeypatch):
    from topics.errors import ConfigError
    from topics.settings import Settings

    monkeypatch.delenv("LEDGERSTREAM_FIELD_KEY", raising=False)
    live = Settings.model_validate({"LEDGERSTREAM_ENVIRONMENT": "live", "LEDGERSTREAM_HOME": str(tmp_path)})
    with pytest.raises(ConfigError, match="LEDGERSTREAM_FIELD_KEY is not set"):
        live.field_key()
    sandbox = Settings.model_validate(
        {"LEDGERSTREAM_ENVIRONMENT": "sandbox", "LEDGERSTREAM_HOME": str(tmp_path)}
    )
    assert sandbox.field_key() == sandbox.field_key() != sandbox.dead_letter_key(), "a key of its own"
    assert (tmp_path / ".stack" / "field.key").stat().st_mode & 0o077 == 0


def test_only_the_components_that_seal_or_open_a_beneficiary_get_the_field_key(catalog):
    from ops.deploy import kubernetes

    holders = set()
    for name, docs in kubernetes(catalog).items():
        for doc in docs:
            if doc["kind"] != "Deployment":
                continue
            env = doc["spec"]["template"]["spec"]["containers"][0]["env"]
            if any(e["name"] == "LEDGERSTREAM_FIELD_KEY" for e in env):
                holders.add(name)
    assert holders == {"status-agent.yaml", "transfers-sink.yaml"}


def test_during_a_rotation_a_value_opens_with_the_key_that_sealed_it():
    from topics.fields import sealed_under

    old, new = secrets.token_bytes(32), secrets.token_bytes(32)
    before = seal_field(old, IBAN, WHERE)
    assert before is not None and sealed_under(before) == key_id(old)
    assert open_field([new, old], before, WHERE) == IBAN
    with pytest.raises(FieldSealError, match=f"sealed under key {key_id(old).hex()}, not one of these"):
        open_field([new], before, WHERE)


def test_previous_field_keys_are_read_in_order_and_a_bad_one_is_named(tmp_path):
    import base64

    from topics.errors import ConfigError
    from topics.settings import Settings

    keys = [secrets.token_bytes(32) for _ in range(3)]
    b64 = [base64.b64encode(k).decode() for k in keys]
    settings = Settings.model_validate(
        {"LEDGERSTREAM_FIELD_KEY": b64[0], "LEDGERSTREAM_FIELD_KEY_PREVIOUS": f"{b64[1]}, {b64[2]}"}
    )
    assert settings.field_keys() == keys
    short = base64.b64encode(b"x" * 16).decode()
    bad = Settings.model_validate(
        {"LEDGERSTREAM_FIELD_KEY": b64[0], "LEDGERSTREAM_FIELD_KEY_PREVIOUS": f"{b64[1]},{short}"}
    )
    with pytest.raises(ConfigError, match="key 2 is 16 bytes, not 32"):
        bad.field_keys()
