"""PostgreSQL roles per component, from `sinks/roles.toml`: each may touch only its tables.

`apply_roles` makes the database's grants to the components' roles exactly the declared
set, in one transaction: a role is created if missing (LOGIN, with its password when one
is given), everything it holds on the schema's tables and sequences is revoked, and the
declared privileges are granted, with USAGE on the sequences of the tables it inserts into.
A role is cluster-wide and its grants are per database, so every migrated database (a
scratch one included) gets the same grants.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from sinks.errors import MigrationError
from topics.settings import database_role

ROLES_FILE = Path(__file__).with_name("roles.toml")
PRIVILEGES = ("select", "insert", "update", "delete")
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
_PRIVILEGE = re.compile(r"^(?P<name>[a-z]+)(?:\((?P<columns>[a-z0-9_, ]+)\))?$")


class RolesError(MigrationError):
    """The roles file is wrong, or names a table the schema does not have."""


@dataclass(frozen=True)
class Privilege:
    """One privilege on one table; `columns` limits it to those columns (SELECT and UPDATE)."""

    name: str
    columns: tuple[str, ...] = ()

    def sql(self) -> sql.Composable:
        keyword = sql.SQL(self.name.upper())
        if not self.columns:
            return keyword
        return sql.Composed(
            [keyword, sql.SQL(" ("), sql.SQL(", ").join(map(sql.Identifier, self.columns)), sql.SQL(")")]
        )


@dataclass(frozen=True)
class RoleSpec:
    """A component's role: the tables it may touch and the roles it is a member of."""

    name: str
    tables: dict[str, tuple[Privilege, ...]] = field(default_factory=dict)
    member_of: tuple[str, ...] = ()

    @property
    def role(self) -> str:
        return database_role(self.name)


@dataclass(frozen=True)
class Roles:
    roles: dict[str, RoleSpec]
    owner_only: tuple[str, ...]

    def names(self) -> list[str]:
        return list(self.roles)


def parse_privileges(table: str, text: str) -> tuple[Privilege, ...]:
    """`"select, insert, update(updated_at)"` as privileges (a bad one is refused, naming it)."""
    found: list[Privilege] = []
    for part in re.split(r",\s*(?![^()]*\))", text.strip()):
        match = _PRIVILEGE.match(part.strip())
        if match is None or match["name"] not in PRIVILEGES:
            raise RolesError(f"{table}: {part.strip()!r} is not a privilege ({', '.join(PRIVILEGES)})")
        columns = tuple(c.strip() for c in (match["columns"] or "").split(",") if c.strip())
        if columns and match["name"] not in ("select", "update"):
            raise RolesError(f"{table}: only select and update may name columns, not {match['name']}")
        if any(not _IDENTIFIER.match(c) for c in columns):
            raise RolesError(f"{table}: bad column list in {part.strip()!r}")
        found.append(Privilege(match["name"], columns))
    names = [p.name for p in found]
    if len(set(names)) != len(names):
        raise RolesError(f"{table}: a privilege is named twice in {text!r}")
    return tuple(found)


def parse_roles(doc: dict[str, Any]) -> Roles:
    roles: dict[str, RoleSpec] = {}
    owner_only = tuple(doc.get("owner_only", []))
    for raw in doc.get("role", []):
        name = raw.get("name")
        if not isinstance(name, str) or not _IDENTIFIER.match(name):
            raise RolesError(f"role name {name!r}: lower-case letters, digits and underscores")
        if name in roles:
            raise RolesError(f"role {name!r} is declared twice")
        unknown = set(raw) - {"name", "tables", "member_of"}
        if unknown:
            raise RolesError(f"role {name}: unknown keys {', '.join(sorted(unknown))}")
        tables: dict[str, tuple[Privilege, ...]] = {}
        for table, text in raw.get("tables", {}).items():
            if not _IDENTIFIER.match(table) or not isinstance(text, str):
                raise RolesError(f'role {name}: {table!r} = {text!r} is not table = "privileges"')
            if table in owner_only:
                raise RolesError(f"role {name}: {table} is owner_only")
            tables[table] = parse_privileges(f"role {name}, {table}", text)
        member_of = tuple(raw.get("member_of", []))
        if any(not _IDENTIFIER.match(m) for m in member_of):
            raise RolesError(f"role {name}: bad member_of {member_of!r}")
        roles[name] = RoleSpec(name, tables, member_of)
    return Roles(roles, owner_only)


def load_roles(path: Path = ROLES_FILE) -> Roles:
    try:
        return parse_roles(tomllib.loads(path.read_text()))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise RolesError(f"{path}: {e}") from e


SCHEMA_RELATIONS = """
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm') AND NOT c.relispartition
"""
SERIAL_SEQUENCES = """
SELECT s.relname FROM pg_depend d
  JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
  JOIN pg_class t ON t.oid = d.refobjid
 WHERE d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') AND t.relname = %s
"""
CREATE_ROLE = """
DO $$ BEGIN
    CREATE ROLE {role} LOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;  -- another database made it first
END $$
"""


def undecided_tables(conn: psycopg.Connection[Any], roles: Roles) -> list[str]:
    """The schema's tables and views that no role names and `owner_only` does not either."""
    named = set(roles.owner_only) | {t for r in roles.roles.values() for t in r.tables}
    return sorted(r[0] for r in conn.execute(SCHEMA_RELATIONS).fetchall() if r[0] not in named)


def apply_roles(
    conn: psycopg.Connection[Any], roles: Roles | None = None, passwords: dict[str, str] | None = None
) -> int:
    """Make the components' roles and their grants exactly `roles` (the file's by default).

    `passwords` (component -> password) sets each named role's password; without it a role
    keeps the one it has. Returns how many grants were made.
    """
    roles = roles or load_roles()
    existing = {r[0] for r in conn.execute(SCHEMA_RELATIONS).fetchall()}
    missing = sorted({t for r in roles.roles.values() for t in r.tables} - existing)
    if missing:
        raise RolesError(f"sinks/roles.toml names tables the schema does not have: {', '.join(missing)}")
    granted = 0
    with conn.transaction():
        database = conn.execute("SELECT current_database()").fetchone()
        assert database is not None
        for spec in roles.roles.values():
            role = sql.Identifier(spec.role)
            try:
                conn.execute(sql.SQL(CREATE_ROLE).format(role=role))
            except psycopg.errors.InsufficientPrivilege as e:
                raise RolesError(
                    f"cannot create role {spec.role}: {e} (grant the migrator CREATEROLE)"
                ) from e
            if passwords and spec.name in passwords:
                conn.execute(
                    sql.SQL("ALTER ROLE {} PASSWORD {}").format(role, sql.Literal(passwords[spec.name]))
                )
            conn.execute(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {}").format(role))
            conn.execute(sql.SQL("REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {}").format(role))
            conn.execute(
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database[0]), role)
            )
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(role))
            for table, privileges in spec.tables.items():
                conn.execute(
                    sql.SQL("GRANT {} ON {} TO {}").format(
                        sql.SQL(", ").join(p.sql() for p in privileges), sql.Identifier(table), role
                    )
                )
                granted += 1
                if any(p.name == "insert" for p in privileges):
                    for (sequence,) in conn.execute(SERIAL_SEQUENCES, (table,)).fetchall():
                        conn.execute(
                            sql.SQL("GRANT USAGE ON SEQUENCE {} TO {}").format(sql.Identifier(sequence), role)
                        )
            for parent in spec.member_of:
                conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(parent), role))
    return granted
