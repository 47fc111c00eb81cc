"""The services of the local stack: Kafka (KRaft), PostgreSQL, Redis, schema registry."""

from __future__ import annotations

import base64
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from ops.stack import fetch
from ops.stack.process import ManagedProcess
from topics.errors import StackError
from topics.ports import KAFKA_CONTROLLER_PORT, KAFKA_PORT, POSTGRES_PORT, REDIS_PORT, REGISTRY_PORT
from topics.settings import OPERATOR, Settings

HOST = "127.0.0.1"
DB_NAME = DB_USER = "ledgerstream"
SASL_MARKER = "ledgerstream.sasl"


def _cluster_id() -> str:
    """A random KRaft cluster id, as Kafka's own Uuid.randomUuid makes one: never starting with
    '-', which the storage tool would read as an option (1 format in 64 failed before)."""
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not candidate.startswith("-"):
            return candidate


def port_open(port: int, host: str = HOST) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


_apt_updated = False


def apt_install(package: str) -> None:
    """Install a Debian package (root only): the stack's own install step."""
    global _apt_updated
    if os.geteuid() != 0:
        raise StackError(f"{package} is missing; install it with: sudo apt-get install -y {package}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _apt_updated:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False)
        _apt_updated = True
    done = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise StackError(f"apt-get install {package} failed:\n{done.stderr[-2000:]}")


class Service(ABC):
    """One process of the stack, with its folder under `.stack/<name>/`."""

    name: str
    port: int
    ready_timeout: float = 60.0

    def __init__(self, stack_dir: Path, cache_dir: Path) -> None:
        self.dir = stack_dir / self.name
        self.cache = cache_dir
        self.process = ManagedProcess(self.name, self.dir / f"{self.name}.pid", self.dir / f"{self.name}.log")

    def install(self) -> str | None:
        """Make sure binaries or jars are present; a line saying what was fetched, or None."""
        return None

    @abstractmethod
    def launch(self) -> None:
        """Prepare the data folder on first use and start the process."""

    @abstractmethod
    def healthy(self) -> bool:
        """Whether the service answers its own protocol."""

    def after_ready(self) -> None:  # noqa: B027 - optional hook, most services need none
        """Idempotent set-up once the service answers (e.g. create the database)."""

    @abstractmethod
    def exports(self) -> dict[str, str]:
        """The environment variables that point a client at this service."""


class Kafka(Service):
    name = "kafka"
    port = KAFKA_PORT
    ready_timeout = 90.0

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{KAFKA_PORT}"

    def install(self) -> str | None:
        return fetch.fetch_kafka(self.cache)

    @property
    def credentials_file(self) -> Path:
        return self.dir / "credentials.json"

    def _operator_password(self) -> str:
        from ops.kafka_acl import ensure_credentials

        return ensure_credentials(self.credentials_file, [OPERATOR])[OPERATOR]

    def operator_settings(self) -> Settings:
        """Settings of the operator (super user) of this broker."""
        return Settings(
            KAFKA_BOOTSTRAP_SERVERS=self.bootstrap,
            KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
            KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
            KAFKA_SASL_USERNAME=OPERATOR,
            KAFKA_SASL_PASSWORD=self._operator_password(),
        )

    def _set_aside_plaintext_data(self, data: Path) -> None:
        """A data folder formatted before SASL has no operator credential: keep it, start anew."""
        if (data / "meta.properties").exists() and not (data / SASL_MARKER).exists():
            aside = data.with_name(f"data.plaintext-{int(time.time())}")
            data.rename(aside)
            print(f"kafka: the broker's data predates SASL/SCRAM; moved to {aside}, formatting anew")

    def launch(self) -> None:
        data = self.dir / "data"
        props = self.dir / "server.properties"
        self._set_aside_plaintext_data(data)
        password = self._operator_password()
        scram = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{OPERATOR}" password="{password}";'
        )
        plain = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="{OPERATOR}" password="{password}" user_{OPERATOR}="{password}";'
        )
        props.touch(mode=0o600)
        props.chmod(0o600)
        props.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@{HOST}:{KAFKA_CONTROLLER_PORT}",
                    f"listeners=SASL_PLAINTEXT://{HOST}:{KAFKA_PORT},CONTROLLER://{HOST}:{KAFKA_CONTROLLER_PORT}",
                    f"advertised.listeners=SASL_PLAINTEXT://{HOST}:{KAFKA_PORT}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=SASL_PLAINTEXT",
                    "listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
                    # clients and the broker itself: SCRAM; the KRaft controller listener cannot
                    # use SCRAM (its credentials live in the metadata it serves), so PLAIN there
                    "listener.name.sasl_plaintext.sasl.enabled.mechanisms=SCRAM-SHA-512",
                    "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
                    "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
                    "sasl.mechanism.controller.protocol=PLAIN",
                    f"listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config={scram}",
                    f"listener.name.controller.plain.sasl.jaas.config={plain}",
                    "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                    f"super.users=User:{OPERATOR}",
                    "allow.everyone.if.no.acl.found=false",
                    f"log.dirs={data}",
                    "num.partitions=1",
                    "auto.create.topics.enable=false",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=12",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "transaction.state.log.num.partitions=4",
                    "group.initial.rebalance.delay.ms=0",
                    "log.segment.bytes=104857600",
                    "",
                ]
            )
        )
        (self.dir / "log4j.properties").write_text(
            "log4j.rootLogger=INFO, stdout\n"
            "log4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
            "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
            "log4j.logger.kafka=INFO\nlog4j.logger.org.apache.kafka=INFO\n"
            "log4j.logger.kafka.request.logger=WARN\nlog4j.logger.state.change.logger=WARN\n"
        )
        classpath = f"{fetch.kafka_libs(self.cache)}/*"
        java = shutil.which("java") or "java"
        if not (data / "meta.properties").exists():
            cluster_id = _cluster_id()
            done = subprocess.run(
                [
                    java,
                    "-cp",
                    classpath,
                    f"-Dlog4j.configuration=file:{self.dir / 'log4j.properties'}",
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(props),
                    "--add-scram",
                    f"SCRAM-SHA-512=[name={OPERATOR},password={password}]",
                ],
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise StackError(f"kafka: formatting storage failed:\n{done.stdout}{done.stderr}")
            (data / SASL_MARKER).write_text("SCRAM-SHA-512 operator credential added at format\n")
        self.process.start(
            [
                java,
                "-Xms256m",
                "-Xmx1g",
                "-XX:+UseG1GC",
                "-Djava.awt.headless=true",
                f"-Dlog4j.configuration=file:{self.dir / 'log4j.properties'}",
                f"-Dkafka.logs.dir={self.dir}",
                "-cp",
                classpath,
                "kafka.Kafka",
                str(props),
            ],
            cwd=self.dir,
        )

    def healthy(self) -> bool:
        from confluent_kafka.admin import AdminClient

        if not port_open(KAFKA_PORT):
            return False
        admin = AdminClient(self.operator_settings().kafka_config(**{"socket.timeout.ms": 2000}))
        try:
            return bool(admin.list_topics(timeout=2).brokers)
        except Exception:
            return False

    def after_ready(self) -> None:
        """Every principal of the catalog gets a password (kept in the credentials file) and
        its SCRAM credential on the broker; `topics apply` grants them their ACLs."""
        from ops.kafka_acl import ensure_credentials, upsert_scram_users
        from topics.catalog import load_catalog

        names = [OPERATOR, *(p.name for p in load_catalog().principals())]
        upsert_scram_users(self.operator_settings(), ensure_credentials(self.credentials_file, names))

    def exports(self) -> dict[str, str]:
        # no password on stdout: clients read the credentials file (the operator's by default)
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "LEDGERSTREAM_KAFKA_CREDENTIALS": str(self.credentials_file),
        }


class Postgres(Service):
    name = "postgres"
    port = POSTGRES_PORT
    ready_timeout = 45.0

    @property
    def url(self) -> str:
        return f"postgresql://{DB_USER}@{HOST}:{POSTGRES_PORT}/{DB_NAME}"

    def _bindir(self) -> Path | None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
        preferred = [p for p in found if "/15/" in p]
        candidates = preferred or found
        return Path(candidates[-1]).parent if candidates else None

    def _user(self) -> str | None:
        """Run as `postgres` when we are root (PostgreSQL refuses root)."""
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise StackError("postgres: running as root but there is no 'postgres' system user") from None
        return "postgres"

    def install(self) -> str | None:
        if self._bindir() is None:
            apt_install("postgresql-15")
            return "PostgreSQL 15 installed from Debian packages"
        return None

    def launch(self) -> None:
        bindir = self._bindir()
        if bindir is None:
            raise StackError("postgres: no PostgreSQL server binaries under /usr/lib/postgresql")
        data, run = self.dir / "data", self.dir / "run"
        user = self._user()
        run.mkdir(parents=True, exist_ok=True)
        if user:
            shutil.chown(self.dir, user)
            shutil.chown(run, user)
            if self.process.logfile.exists():
                shutil.chown(self.process.logfile, user)
        if not (data / "PG_VERSION").exists():
            shutil.rmtree(data, ignore_errors=True)
            done = subprocess.run(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    DB_USER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-locale",
                ],
                capture_output=True,
                text=True,
                user=user,
            )
            if done.returncode != 0:
                raise StackError(f"postgres: initdb failed:\n{done.stdout[-1500:]}{done.stderr[-1500:]}")
            with open(data / "postgresql.conf", "a") as conf:
                conf.write(
                    f"\n# ledgerstream local stack\nport = {POSTGRES_PORT}\nlisten_addresses = '{HOST}'\n"
                    f"unix_socket_directories = '{run}'\nmax_connections = 200\nshared_buffers = 256MB\n"
                    "max_wal_size = 2GB\nlog_min_messages = warning\n"
                )
        # every TCP client proves its password (SCRAM); only the server's own OS user (and root)
        # reaches the Unix socket, which the stack uses to set the owner's password
        (data / "pg_hba.conf").write_text(
            "# written by `ledgerstream stack up`\n"
            "local all all trust\n"
            f"host all all {HOST}/32 scram-sha-256\n"
        )
        if user:
            shutil.chown(data / "pg_hba.conf", user)
        # the port on the command line: a cluster made under another LEDGERSTREAM_PORT_OFFSET keeps its own
        command = [
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(POSTGRES_PORT),
            "-c",
            f"unix_socket_directories={run}",
            "-c",
            "unix_socket_permissions=0700",
            "-c",
            "password_encryption=scram-sha-256",
        ]
        self.process.start(command, cwd=self.dir, user=user)

    def _socket(self, database: str, **options: Any) -> Any:
        import psycopg

        return psycopg.connect(
            host=str(self.dir / "run"), port=POSTGRES_PORT, user=DB_USER, dbname=database, **options
        )

    def healthy(self) -> bool:
        import psycopg

        try:
            with self._socket("postgres", connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def after_ready(self) -> None:
        from psycopg import sql

        from ops.kafka_acl import ensure_credentials
        from sinks.roles import load_roles

        password = self._owner_password()
        with self._socket("postgres", autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DB_NAME}"')
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(DB_USER), sql.Literal(password))
            )
        # every component's role gets a password; `db migrate` creates the roles and sets them
        ensure_credentials(self.credentials_file, load_roles().names())

    @property
    def passfile(self) -> Path:
        """The owner's password in libpq's format (PGPASSFILE), made on first start."""
        return self.dir / "pgpass"

    def _owner_password(self) -> str:
        try:
            return self.passfile.read_text().strip().rsplit(":", 1)[1]
        except (FileNotFoundError, IndexError):
            pass
        from ops.kafka_acl import write_private

        password = secrets.token_urlsafe(24)
        write_private(self.passfile, f"{HOST}:*:*:{DB_USER}:{password}\n")
        return password

    @property
    def credentials_file(self) -> Path:
        """Component -> the password of its PostgreSQL role (see sinks/roles.toml)."""
        return self.dir / "credentials.json"

    def exports(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.url,
            "PGPASSFILE": str(self.passfile),  # the owner's password, kept off stdout
            "LEDGERSTREAM_DATABASE_CREDENTIALS": str(self.credentials_file),
        }


class Redis(Service):
    name = "redis"
    port = REDIS_PORT
    ready_timeout = 20.0

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{REDIS_PORT}/0"

    def install(self) -> str | None:
        if shutil.which("redis-server") is None:
            apt_install("redis-server")
            return "Redis installed from Debian packages"
        return None

    def launch(self) -> None:
        server = shutil.which("redis-server")
        if server is None:
            raise StackError("redis: redis-server is not installed")
        data = self.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        self.process.start(
            [
                server,
                "--port",
                str(REDIS_PORT),
                "--bind",
                HOST,
                "--dir",
                str(data),
                "--appendonly",
                "yes",
                "--save",
                "",
                "--daemonize",
                "no",
                "--protected-mode",
                "no",
            ],
            cwd=self.dir,
        )

    def healthy(self) -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=2).ping())
        except redis.RedisError:
            return False

    def exports(self) -> dict[str, str]:
        return {"REDIS_URL": self.url}


class Registry(Service):
    """Apicurio Registry, whose ccompat API speaks the Confluent Schema Registry protocol."""

    name = "registry"
    port = REGISTRY_PORT
    ready_timeout = 90.0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{REGISTRY_PORT}/apis/ccompat/v7"

    def install(self) -> str | None:
        return fetch.fetch_registry(self.cache)

    def launch(self) -> None:
        java = shutil.which("java") or "java"
        jar = fetch.registry_jar(self.cache)
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        self.process.start(
            [
                java,
                "-Xms64m",
                "-Xmx384m",
                f"-Dquarkus.http.host={HOST}",
                f"-Dquarkus.http.port={REGISTRY_PORT}",
                "-jar",
                str(jar),
            ],
            env={
                "REGISTRY_DATASOURCE_URL": f"jdbc:h2:file:{self.dir / 'data' / 'registry'}"
                ";DB_CLOSE_ON_EXIT=FALSE"
            },
            cwd=self.dir,
        )

    def healthy(self) -> bool:
        import httpx

        try:
            return httpx.get(f"{self.url}/subjects", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def exports(self) -> dict[str, str]:
        return {"SCHEMA_REGISTRY_URL": self.url}
