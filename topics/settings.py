"""Runtime settings, read once from the environment at an entrypoint and passed down."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]

Environment = Literal["live", "sandbox"]


class Settings(BaseSettings):
    """Connection and behaviour settings for every ledgerstream process.

    The defaults name the local stack that `ledgerstream stack up` starts, so a
    fresh checkout works without any variable set.
    """

    model_config = SettingsConfigDict(frozen=True, extra="forbid")

    kafka_bootstrap_servers: str = Field("127.0.0.1:19092", validation_alias="KAFKA_BOOTSTRAP_SERVERS")
    database_url: SecretStr = Field(
        SecretStr("postgresql://ledgerstream@127.0.0.1:15432/ledgerstream"),
        validation_alias="DATABASE_URL",
    )
    redis_url: str = Field("redis://127.0.0.1:16379/0", validation_alias="REDIS_URL")
    schema_registry_url: str | None = Field(None, validation_alias="SCHEMA_REGISTRY_URL")
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

    @field_validator("schema_registry_url", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @cached_property
    def stack_dir(self) -> Path:
        """Where the local stack keeps data, logs and PID files."""
        return self.home / ".stack"

    @cached_property
    def cache_dir(self) -> Path:
        """Where downloaded jars (Kafka, the schema registry) are kept between runs."""
        return self.home / ".cache"

    def kafka_config(self, **extra: Any) -> dict[str, Any]:
        """librdkafka's dotted configuration, built only at the edge."""
        return {"bootstrap.servers": self.kafka_bootstrap_servers, **extra}
