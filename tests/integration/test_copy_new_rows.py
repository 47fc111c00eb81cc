"""Rows written by COPY when they are new, and through their INSERT's ON CONFLICT when one is not."""

from __future__ import annotations

import psycopg

from topics.database import FEW, copy_new_rows
from topics.settings import Settings

COPY = "COPY seen (id, note) FROM STDIN"
INSERT = "INSERT INTO seen (id, note) VALUES (%s, %s) ON CONFLICT (id) DO NOTHING"


def test_new_rows_are_copied_and_a_row_already_there_is_kept(services: Settings) -> None:
    with psycopg.connect(services.database_url.get_secret_value()) as conn, conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE seen (id int PRIMARY KEY, note text NOT NULL)")
        copy_new_rows(cur, COPY, INSERT, [(n, f"first {n}") for n in range(20)])
        copy_new_rows(cur, COPY, INSERT, [(n, f"again {n}") for n in range(15, 40)])  # 15-19 are there
        copy_new_rows(cur, COPY, INSERT, [(n, f"few {n}") for n in range(38, 38 + FEW)])  # 38, 39 are there
        rows = dict(cur.execute("SELECT id, note FROM seen").fetchall())
    assert sorted(rows) == list(range(38 + FEW))
    assert [rows[n] for n in (0, 19, 20, 39, 40)] == ["first 0", "first 19", "again 20", "again 39", "few 40"]
