"""A schema registry that wants HTTP basic auth: every client ledgerstream makes sends it."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from topics.codec import codec_from_settings
from topics.errors import ConfigError
from topics.settings import Settings

pytestmark = pytest.mark.integration


class _Registry(BaseHTTPRequestHandler):
    """Answers one schema by id, only to the right credentials, and notes what it was sent."""

    seen: list[str | None] = []
    expected = "Basic " + base64.b64encode(b"svc-ledgerstream:s3cret").decode()

    def do_GET(self) -> None:
        given = self.headers.get("Authorization")
        self.seen.append(given)
        if given != self.expected:
            self.send_response(401)
            body = {"error_code": 401, "message": "Unauthorized"}
        else:
            self.send_response(200)
            body = {"schema": json.dumps({"type": "string"})}
        raw = json.dumps(body).encode()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def registry():
    _Registry.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def settings_for(url: str, user_info: str | None) -> Settings:
    env = {"SCHEMA_REGISTRY_URL": url}
    if user_info is not None:
        env["SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO"] = user_info
    return Settings.model_validate(env)


def test_the_codecs_registry_client_sends_the_configured_credentials(registry):
    codec = codec_from_settings(settings_for(registry, "svc-ledgerstream:s3cret"))
    try:
        assert codec.registry is not None
        assert codec.registry.get_schema(1).schema_str == '{"type": "string"}'
    finally:
        codec.close()
    assert _Registry.seen == [_Registry.expected]


def test_without_credentials_the_registry_refuses_and_the_client_says_so(registry):
    with (
        SchemaRegistryClient(settings_for(registry, None).registry_config()) as client,
        pytest.raises(Exception, match="Unauthorized"),
    ):
        client.get_schema(2)
    assert _Registry.seen == [None]


def test_credentials_that_are_not_user_colon_password_are_refused_before_any_request(registry):
    with pytest.raises(ConfigError, match="user:password"):
        settings_for(registry, "just-a-token").registry_config()
    assert settings_for(registry, "  ").schema_registry_user_info is None
    assert "s3cret" not in repr(settings_for(registry, "svc:s3cret"))
    assert _Registry.seen == []
