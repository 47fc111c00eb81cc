"""Versioned SQL migrations: `sinks/migrations/NNNN_name.sql`, applied in order.

Each file runs in its own transaction and is recorded with its SHA-256 checksum.
A file that changed after it was applied is refused: a released migration is
never edited, a new one is added. An advisory lock keeps two migrators apart.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg
from psycopg import sql

from sinks.errors import MigrationError
from sinks.roles import apply_roles

MIGRATIONS = Path(__file__).with_name("migrations")
FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
LOCK_KEY = 0x1ED6E5

BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    int PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class MigrationState:
    migration: Migration
    applied_at: datetime | None
    changed: bool

    @property
    def status(self) -> str:
        if self.applied_at is None:
            return "pending"
        return "CHANGED after apply" if self.changed else "applied"


def discover(folder: Path = MIGRATIONS) -> list[Migration]:
    found = []
    for path in sorted(folder.glob("*.sql")):
        match = FILE.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        found.append(Migration(int(match["version"]), match["name"], path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migration files share a version number")
    return found


@contextlib.contextmanager
def scratch_database(
    url: str, prefix: str = "ledgerstream_scratch", *, passwords: dict[str, str] | None = None
) -> Iterator[str]:
    """Create a migrated database next to `url`'s, yield its URL, drop it afterwards
    (benchmarks and tests that must not touch real data). `passwords`: see `migrate`."""
    base, _, _ = url.rpartition("/")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        with connect(f"{base}/{name}") as conn:
            migrate(conn, passwords=passwords)
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def connect(url: str) -> psycopg.Connection:
    """An autocommit connection: each migration then gets a transaction of its own."""
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as e:
        raise MigrationError(f"cannot connect to PostgreSQL: {e}") from e


def status(conn: psycopg.Connection, folder: Path = MIGRATIONS) -> list[MigrationState]:
    """Every migration with whether it is applied, pending, or changed since."""
    conn.execute(BOOKKEEPING)
    applied = {
        row[0]: (row[1], row[2])
        for row in conn.execute("SELECT version, checksum, applied_at FROM schema_migrations").fetchall()
    }
    states = []
    for m in discover(folder):
        checksum, at = applied.get(m.version, (None, None))
        states.append(MigrationState(m, at, checksum is not None and checksum != m.checksum))
    return states


def migrate(
    conn: psycopg.Connection, folder: Path = MIGRATIONS, *, passwords: dict[str, str] | None = None
) -> list[Migration]:
    """Apply every pending migration in order, then the components' roles and grants
    (`sinks/roles.toml`, with `passwords` if given); returns the migrations applied.

    `conn` must be in autocommit mode (see `connect`). A folder other than the project's
    (a test's partial schema) gets no roles.
    """
    if not conn.autocommit:
        raise MigrationError("migrate needs an autocommit connection")
    conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    try:
        states = status(conn, folder)
        changed = [s.migration.path.name for s in states if s.changed]
        if changed:
            raise MigrationError(
                f"{', '.join(changed)} changed after being applied; "
                "a released migration is never edited: add a new one"
            )
        done = []
        for state in states:
            if state.applied_at is not None:
                continue
            m = state.migration
            try:
                with conn.transaction():
                    conn.execute(m.sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                        (m.version, m.name, m.checksum),
                    )
            except psycopg.Error as e:
                raise MigrationError(f"{m.path.name} failed and was rolled back: {e}") from e
            done.append(m)
        if folder == MIGRATIONS:
            apply_roles(conn, passwords=passwords)
        return done
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
