"""Runtime settings, read once from the environment at an entrypoint and passed down."""

from __future__ import annotations

import base64
import json
import os
import secrets
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from psycopg.conninfo import make_conninfo
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from topics.errors import ConfigError
from topics.ports import KAFKA_PORT, POSTGRES_PORT, REDIS_PORT

REPO_ROOT = Path(__file__).resolve().parents[1]

Environment = Literal["live", "sandbox"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
OPERATOR = "admin"
"""The local stack's operator principal (a Kafka super user): topics, ACLs, tools."""


API, WEBHOOKS, CHAIN_LISTENER, CHAIN_SENDER, PAYOUT_DISPATCHER = (
    "api",
    "webhooks",
    "chain_listener",
    "chain_sender",
    "payout_dispatcher",
)
"""The connectors that are not Kafka principals (they write the outbox): each has its own
PostgreSQL role all the same."""


def database_role(component: str) -> str:
    """The PostgreSQL role of `component` (see sinks/roles.toml)."""
    return f"ledgerstream_{component}"


def _decoded(text: str, what: str) -> bytes:
    """A 32-byte key from its base64; ConfigError naming `what` when it is not one."""
    try:
        key = base64.b64decode(text, validate=True)
    except ValueError:
        raise ConfigError(f"{what} is not base64") from None
    if len(key) != 32:
        raise ConfigError(f"{what} is {len(key)} bytes, not 32 bytes")
    return key


class Settings(BaseSettings):
    """Connection and behaviour settings for every ledgerstream process.

    The defaults name the local stack that `ledgerstream stack up` starts, so a
    fresh checkout works without any variable set.
    """

    model_config = SettingsConfigDict(frozen=True, extra="forbid")

    kafka_bootstrap_servers: str = Field(
        f"127.0.0.1:{KAFKA_PORT}", validation_alias="KAFKA_BOOTSTRAP_SERVERS"
    )
    kafka_security_protocol: SecurityProtocol = Field(
        "SASL_PLAINTEXT", validation_alias="KAFKA_SECURITY_PROTOCOL"
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = Field(
        "SCRAM-SHA-512", validation_alias="KAFKA_SASL_MECHANISM"
    )
    kafka_sasl_username: str | None = Field(None, validation_alias="KAFKA_SASL_USERNAME")
    """This process's Kafka principal; unset, the local stack's credentials file names it."""
    kafka_sasl_password: SecretStr | None = Field(None, validation_alias="KAFKA_SASL_PASSWORD")
    kafka_ssl_ca_location: Path | None = Field(None, validation_alias="KAFKA_SSL_CA_LOCATION")
    kafka_ssl_certificate_location: Path | None = Field(
        None, validation_alias="KAFKA_SSL_CERTIFICATE_LOCATION"
    )
    kafka_ssl_key_location: Path | None = Field(None, validation_alias="KAFKA_SSL_KEY_LOCATION")
    kafka_ssl_key_password: SecretStr | None = Field(None, validation_alias="KAFKA_SSL_KEY_PASSWORD")
    dlq_key: SecretStr | None = Field(None, validation_alias="LEDGERSTREAM_DLQ_KEY")
    """Base64 of the 32-byte AES key that seals dead-letter values (see topics.deadletter)."""
    field_key_b64: SecretStr | None = Field(None, validation_alias="LEDGERSTREAM_FIELD_KEY")
    """Base64 of the 32-byte AES key that seals bank account details at rest (see topics.fields)."""
    previous_field_keys_b64: SecretStr | None = Field(
        None, validation_alias="LEDGERSTREAM_FIELD_KEY_PREVIOUS"
    )
    """During a rotation: the keys that sealed values before the current one, comma-separated base64."""
    kafka_credentials_file: Path | None = Field(None, validation_alias="LEDGERSTREAM_KAFKA_CREDENTIALS")
    """Principal -> password, for processes that run several components (the local stack's)."""
    database_credentials_file: Path | None = Field(None, validation_alias="LEDGERSTREAM_DATABASE_CREDENTIALS")
    """Component -> its PostgreSQL role's password, for processes that run several components
    and for `db migrate` to set (the local stack's)."""
    database_url: SecretStr = Field(
        SecretStr(f"postgresql://ledgerstream@127.0.0.1:{POSTGRES_PORT}/ledgerstream"),
        validation_alias="DATABASE_URL",
    )
    redis_url: str = Field(f"redis://127.0.0.1:{REDIS_PORT}/0", validation_alias="REDIS_URL")
    schema_registry_url: str | None = Field(None, validation_alias="SCHEMA_REGISTRY_URL")
    schema_registry_user_info: SecretStr | None = Field(
        None, validation_alias="SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO"
    )
    """`user:password` for a registry that wants HTTP basic auth (Confluent Cloud's key:secret)."""
    environment: Environment = Field("sandbox", validation_alias="LEDGERSTREAM_ENVIRONMENT")
    topic_profile: Literal["dev", "prod"] = Field("dev", validation_alias="LEDGERSTREAM_TOPIC_PROFILE")
    avro_dir: Path = Field(REPO_ROOT / "avro", validation_alias="LEDGERSTREAM_AVRO_DIR")
    home: Path = Field(REPO_ROOT, validation_alias="LEDGERSTREAM_HOME")
    pricing_file: Path = Field(
        REPO_ROOT / "streams" / "pricing.toml", validation_alias="LEDGERSTREAM_PRICING"
    )
    """Fee schedules, FX pricing and billing plans (data, versioned in git)."""
    aml_rules_file: Path = Field(
        REPO_ROOT / "streams" / "aml" / "rules.yaml", validation_alias="LEDGERSTREAM_AML_RULES"
    )
    """AML rulesets and the sanctions list they name."""

    @field_validator(
        "schema_registry_url",
        "schema_registry_user_info",
        "kafka_sasl_username",
        "kafka_ssl_ca_location",
        "kafka_ssl_certificate_location",
        "kafka_ssl_key_location",
        "kafka_credentials_file",
        "database_credentials_file",
        mode="before",
    )
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    def registry_config(self) -> dict[str, str]:
        """confluent-kafka's SchemaRegistryClient configuration: the URL and, when set, basic auth."""
        if not self.schema_registry_url:
            raise ConfigError("SCHEMA_REGISTRY_URL is not set")
        config = {"url": self.schema_registry_url}
        if self.schema_registry_user_info is not None:
            info = self.schema_registry_user_info.get_secret_value()
            if ":" not in info:
                raise ConfigError("SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO must be user:password")
            config["basic.auth.user.info"] = info
        return config

    @cached_property
    def stack_dir(self) -> Path:
        """Where the local stack keeps data, logs and PID files."""
        return self.home / ".stack"

    @cached_property
    def cache_dir(self) -> Path:
        """Where downloaded jars (Kafka, the schema registry) are kept between runs."""
        return self.home / ".cache"

    def dead_letter_key(self) -> bytes:
        """The dead-letter key: LEDGERSTREAM_DLQ_KEY, else (sandbox only) the local stack's key file,
        made on first use. A live deployment must set its key."""
        return self._key(self.dlq_key, "LEDGERSTREAM_DLQ_KEY", "dlq.key", "dead letters")

    def field_key(self) -> bytes:
        """The bank-details key (`topics.fields`), apart from every other key: LEDGERSTREAM_FIELD_KEY,
        else (sandbox only) the local stack's key file, made on first use. A live deployment must
        set its key."""
        return self._key(self.field_key_b64, "LEDGERSTREAM_FIELD_KEY", "field.key", "bank account details")

    def field_keys(self) -> list[bytes]:
        """Every key a sealed field may open with: the current one first, then the previous ones
        (LEDGERSTREAM_FIELD_KEY_PREVIOUS, during a rotation)."""
        text = self.previous_field_keys_b64.get_secret_value() if self.previous_field_keys_b64 else ""
        parts = [p.strip() for p in text.split(",") if p.strip()]
        previous = [_decoded(p, f"LEDGERSTREAM_FIELD_KEY_PREVIOUS: key {n}") for n, p in enumerate(parts, 1)]
        return [self.field_key(), *previous]

    def _key(self, given: SecretStr | None, variable: str, filename: str, what: str) -> bytes:
        """A 32-byte key: `given` (base64), else (sandbox only) `.stack/<filename>`, made on first use."""
        if given is not None:
            return _decoded(given.get_secret_value(), variable)
        if self.environment == "live":
            raise ConfigError(f"{variable} is not set: live {what} need a key of their own")
        path = self.stack_dir / filename
        if not path.exists():  # written whole, then linked: a racing process sees no key or all of it
            path.parent.mkdir(parents=True, exist_ok=True)
            draft = path.with_name(f"{filename}.{os.getpid()}.{secrets.token_hex(4)}")
            fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
            try:
                os.link(draft, path)
            except FileExistsError:
                pass
            finally:
                draft.unlink()
        key = path.read_bytes()
        if len(key) != 32:
            raise ConfigError(f"{path}: a key for {what} is 32 bytes, not {len(key)}")
        return key

    @property
    def credentials_path(self) -> Path:
        """The principal -> password file: the configured one, else the local stack's."""
        return self.kafka_credentials_file or self.stack_dir / "kafka" / "credentials.json"

    def kafka_credentials(self) -> dict[str, str]:
        """The credentials file's principals and passwords ({} when there is none)."""
        return _credentials(self.credentials_path, "Kafka")

    @property
    def database_credentials_path(self) -> Path:
        """The component -> database password file: the configured one, else the local stack's."""
        return self.database_credentials_file or self.stack_dir / "postgres" / "credentials.json"

    def database_credentials(self) -> dict[str, str]:
        """The database credentials file's components and passwords ({} when there is none)."""
        return _credentials(self.database_credentials_path, "database")

    def as_principal(self, name: str) -> Settings:
        """These settings under component `name`'s own Kafka principal and PostgreSQL role.

        In production each process is given its identities by KAFKA_SASL_USERNAME,
        KAFKA_SASL_PASSWORD and DATABASE_URL, and has no credentials files: the settings
        stay as they are. Where a credentials file names the component (the local stack),
        it is used, so a process running several components (the demo) gives each its own.
        """
        settings = self.as_database_role(name)
        password = self.kafka_credentials().get(name)
        if password is None:
            return settings
        own = {"kafka_sasl_username": name, "kafka_sasl_password": SecretStr(password)}
        return settings.model_copy(update=own)

    def as_database_role(self, name: str) -> Settings:
        """These settings under component `name`'s PostgreSQL role only (its Kafka identity
        unchanged), where the database credentials file names it; else as they are."""
        password = self.database_credentials().get(name)
        if password is None:
            return self
        url = make_conninfo(self.database_url.get_secret_value(), user=database_role(name), password=password)
        return self.model_copy(update={"database_url": SecretStr(url)})

    @property
    def kafka_principal(self) -> str | None:
        """The Kafka user this process authenticates as (None without SASL)."""
        if not self.kafka_security_protocol.startswith("SASL"):
            return None
        return self.kafka_sasl_username or OPERATOR

    def kafka_config(self, **extra: Any) -> dict[str, Any]:
        """librdkafka's dotted configuration, built only at the edge."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.kafka_bootstrap_servers,
            "security.protocol": self.kafka_security_protocol,
        }
        if self.kafka_security_protocol.startswith("SASL"):
            username, password = self.kafka_sasl_username, self.kafka_sasl_password
            if username is None:
                username = OPERATOR
                stored = self.kafka_credentials().get(OPERATOR)
                password = SecretStr(stored) if stored is not None else None
            if password is None:
                raise ConfigError(
                    f"Kafka uses {self.kafka_security_protocol} but no password is set for {username!r}: "
                    "set KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD, or start the local stack "
                    "(ledgerstream stack up) which writes its credentials file"
                )
            config |= {
                "sasl.mechanism": self.kafka_sasl_mechanism,
                "sasl.username": username,
                "sasl.password": password.get_secret_value(),
            }
        if self.kafka_security_protocol.endswith("SSL"):
            for key, value in (
                ("ssl.ca.location", self.kafka_ssl_ca_location),
                ("ssl.certificate.location", self.kafka_ssl_certificate_location),
                ("ssl.key.location", self.kafka_ssl_key_location),
            ):
                if value is not None:
                    config[key] = str(value)
            if self.kafka_ssl_key_password is not None:
                config["ssl.key.password"] = self.kafka_ssl_key_password.get_secret_value()
        return config | extra


def _credentials(path: Path, what: str) -> dict[str, str]:
    try:
        loaded = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: unreadable {what} credentials ({e})") from e
    if not isinstance(loaded, dict) or not all(isinstance(v, str) for v in loaded.values()):
        raise ConfigError(f"{path}: expected a JSON object of name -> password")
    return loaded
