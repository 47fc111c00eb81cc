"""Operators' and analysts' tools on real topics: `tail` in both framings, and a poison event
fixed and redriven from its dead-letter topic exactly once."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import uuid
from decimal import Decimal

import psycopg
import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from ops.dead_letters import dead_letter, read_dead_letters
from sinks.base import SinkRunner
from sinks.ledger import LedgerSink
from streams.ledger.postings import fee_assessed
from tests.fixtures.database import private_database
from tests.fixtures.events import metadata, transfer_confirmed, transfer_requested
from tests.fixtures.kafka import fresh_topic, produce_raw
from tests.fixtures.running import running
from tests.fixtures.services import service_environment
from tests.fixtures.waiting import wait_for
from topics.codec import AvroCodec, codec_from_settings
from topics.consuming import start_at_end
from topics.deadletter import KIP_1034
from topics.journals import journal_entry_id, journal_record
from topics.schemas import load_store
from topics.settings import REPO_ROOT

RUN = uuid.uuid4().hex[:8]
CONFIRMED = "crypto.wallet.transfer.confirmed.v1"


def cli(settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *args],
        env=service_environment(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_tail_decodes_both_framings_of_one_topic_with_start_key_and_filter(services):
    topic = fresh_topic(services, "tail", partitions=2)
    single = AvroCodec(load_store(REPO_ROOT / "avro"))
    records = [transfer_requested(f"acc-tail-{RUN}-{i % 2}", 1000 + i) for i in range(6)]
    messages = [
        (r["account_id"].encode(), single.encode("payments.transfer.requested.v1", r)) for r in records
    ]
    framings = {"single-object"}
    if services.schema_registry_url:
        registry = codec_from_settings(services, auto_register=True)
        extra = transfer_requested(f"acc-tail-{RUN}-0", 7777)
        messages.append(
            (extra["account_id"].encode(), registry.encode("payments.transfer.requested.v1", extra))
        )
        registry.close()
        records.append(extra)
        framings.add("registry")
    produce_raw(services, topic, messages)

    done = cli(services, "tail", topic, "-o", "beginning")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(line["value"]["amount"]["units"] for line in lines) == sorted(
        r["amount"]["units"] for r in records
    )
    assert {line["framing"] for line in lines} == framings
    assert all(line["value"]["amount"]["currency"] == "EUR" and "error" not in line for line in lines)
    assert {line["value"]["beneficiary_reference"] for line in lines} == {"****5555"}, (
        "account numbers masked"
    )

    keyed = cli(services, "tail", topic, "-o", "beginning", "--key", f"acc-tail-{RUN}-1")
    assert {json.loads(line)["key"] for line in keyed.stdout.splitlines()} == {f"acc-tail-{RUN}-1"}
    assert len(keyed.stdout.splitlines()) == 3

    filtered = cli(services, "tail", topic, "-o", "beginning", "--filter", "amount.units=1004")
    assert [json.loads(line)["value"]["transfer_id"] for line in filtered.stdout.splitlines()] == [
        records[4]["transfer_id"]
    ]
    used = lines[0]["partition"]
    last = cli(services, "tail", topic, "-o", "-1", "-p", str(used))
    assert len(last.stdout.splitlines()) == 1 and json.loads(last.stdout)["partition"] == used

    bad = cli(services, "tail", topic, "-o", "yesterday")
    assert bad.returncode == 1 and "use beginning, end, -N" in bad.stderr and "Traceback" not in bad.stderr


@pytest.fixture
def db(services):
    with private_database(services) as settings:
        yield settings


def test_a_poison_event_fixed_and_redriven_lands_exactly_once(db, catalog):
    """A journal in an asset the registry does not know is refused to the dead letters; once the
    asset is registered, a redrive posts it, once, and a second redrive needs --force."""
    topic = fresh_topic(db, "poison")
    codec = AvroCodec(load_store(REPO_ROOT / "avro"))
    account, reference = f"acc-poison-{RUN}", f"poison-{RUN}"
    journal = fee_assessed(
        tenant="tenant-1", fee_id=reference, account_id=account, units=125, currency="PSN", exponent=6
    )
    record = journal_record(
        journal,
        journal_entry_id=journal_entry_id(journal.reference_id),
        account_id=account,
        metadata=metadata("ledger.journal.posted"),
    )
    produce_raw(db, topic, [(account.encode(), codec.encode("ledger.journal.posted.v1", record))])
    runner = SinkRunner(
        db,
        LedgerSink(),
        codec,
        topics=[topic],
        group_id=f"test-poison-{RUN}",
        input_aliases={topic: "ledger.journal.posted.v1"},
        linger=0.05,
    )
    url = db.database_url.get_secret_value()
    posted = "SELECT count(*) FROM journal_entries WHERE reference_id = %s"

    def letter():
        mine = [m for m in read_dead_letters(db, "ledger_sink") if dead_letter(m).origin_topic == topic]
        return mine[0] if mine else None

    with running(runner.run), psycopg.connect(url, autocommit=True) as conn:
        msg = wait_for(letter, 60, what="the poison journal to be dead-lettered")
        d = dead_letter(msg)
        assert "PSN" in d.reason and conn.execute(posted, (journal.reference_id,)).fetchone()[0] == 0
        headers = dict(msg.headers())
        assert headers[KIP_1034 + "topic"] == topic.encode()
        assert headers[KIP_1034 + "offset"] == str(d.origin_offset).encode()
        assert headers[KIP_1034 + "exception"] == d.error_class.encode()

        shown = cli(db, "dlq", "show", "ledger_sink", "--origin", d.origin)
        assert shown.returncode == 0, shown.stderr
        assert '"asset": "PSN"' in shown.stdout and f'"origin": "{d.origin}"' in shown.stdout

        # the fix: the asset is registered; then the dead letter goes back to its topic, once
        conn.execute("INSERT INTO crypto_assets VALUES ('ethereum', 'PSN', 6, NULL)")
        redriven = cli(
            db, "dlq", "redrive", "ledger_sink", "--origin", d.origin, "--reason", "PSN registered"
        )
        assert redriven.returncode == 0, redriven.stderr
        assert "1 sent, 0 skipped" in redriven.stdout
        wait_for(
            lambda: conn.execute(posted, (journal.reference_id,)).fetchone()[0] == 1,
            60,
            what="the redriven journal",
        )

        again = cli(db, "dlq", "redrive", "ledger_sink", "--origin", d.origin, "--reason", "again")
        assert again.returncode == 1 and "already redriven" in again.stderr
        forced = cli(
            db, "dlq", "redrive", "ledger_sink", "--origin", d.origin, "--reason", "again", "--force"
        )
        assert "1 sent" in forced.stdout
        # the forced copy reaches the sink, which drops it by reference: still one journal
        wait_for(lambda: runner.stats.consumed >= 3, 60, what="the forced copy to be consumed")
        assert conn.execute(posted, (journal.reference_id,)).fetchone()[0] == 1
        log = conn.execute(
            "SELECT action, target, reason, detail->>'count' FROM operations_log ORDER BY id"
        ).fetchall()
        assert log == [
            ("dlq.redrive", "dlq.ledger_sink.dead_lettered.v1", "PSN registered", "1"),
            ("dlq.redrive", "dlq.ledger_sink.dead_lettered.v1", "again", "1"),
        ]
        listed = cli(db, "dlq", "list", "--consumer", "ledger_sink")
        assert listed.returncode == 0 and "CheckViolation" in listed.stdout

    missing = cli(db, "dlq", "redrive", "ledger_sink", "--reason", "x")
    assert missing.returncode == 2 and "--all" in missing.stderr


def test_an_offset_reset_is_planned_with_money_refused_while_members_run_then_recorded(db):
    topic = fresh_topic(db, "offsets", partitions=2)
    codec = AvroCodec(load_store(REPO_ROOT / "avro"))
    records = [transfer_requested(f"acc-off-{RUN}-{i % 2}", 10_000 + i) for i in range(10)]
    produce_raw(
        db, topic, [(r["account_id"].encode(), codec.encode(topic_of_transfers(), r)) for r in records]
    )
    group = f"test-offsets-{RUN}"
    start_at_end(db, group, [topic])
    total = sum(r["amount"]["units"] for r in records)  # cents

    dry = cli(db, "offsets", "reset", group, "--topic", topic, "--to-earliest")
    assert dry.returncode == 0, dry.stderr
    assert "10 events would be reprocessed, 0 skipped" in dry.stdout
    assert f"EUR {Decimal(total).scaleb(-2):,}" in dry.stdout
    assert "dry run: nothing changed" in dry.stderr
    assert committed_offsets(db, group, topic) == ends(db, topic)

    unexplained = cli(db, "offsets", "reset", group, "--topic", topic, "--to-earliest", "--execute")
    assert unexplained.returncode == 2 and "--reason" in unexplained.stderr

    member = Consumer(db.kafka_config(**{"group.id": group, "enable.auto.commit": False}))
    member.subscribe([topic])
    try:
        wait_for(lambda: member.poll(0.2) is None and member.assignment(), 30, what="the member to join")
        refused = cli(
            db,
            "offsets",
            "reset",
            group,
            "--topic",
            topic,
            "--to-earliest",
            "--execute",
            "--reason",
            "fee bug fixed",
        )
        assert refused.returncode == 1 and "active members" in refused.stderr
    finally:
        member.close()
    assert committed_offsets(db, group, topic) == ends(db, topic)

    clamped = cli(db, "offsets", "reset", group, "--topic", topic, "--to-offset", "999", "--no-money")
    assert clamped.returncode == 0 and "past the end" in clamped.stderr

    done = wait_for(
        lambda: (
            (
                r := cli(
                    db,
                    "offsets",
                    "reset",
                    group,
                    "--topic",
                    topic,
                    "--to-earliest",
                    "--execute",
                    "--reason",
                    "fee bug fixed",
                )
            ).returncode
            == 0
            and r
        ),
        60,
        what="the reset once the group is empty",
    )
    assert "moved" in done.stdout
    assert committed_offsets(db, group, topic) == {p: 0 for p in ends(db, topic)}
    with psycopg.connect(db.database_url.get_secret_value()) as conn:
        action, reason, detail = conn.execute(
            "SELECT action, reason, detail FROM operations_log WHERE target = %s", (group,)
        ).fetchone()
    assert (action, reason) == ("offsets.reset", "fee bug fixed")
    assert sorted((p["before"], p["after"]) for p in detail["partitions"]) == sorted(
        (high, 0) for high in ends(db, topic).values()
    )
    assert sum(Decimal(p["money"].get("EUR", "0")) for p in detail["partitions"]) == Decimal(total) / 100


def topic_of_transfers() -> str:
    return "payments.transfer.requested.v1"


def ends(settings, topic: str) -> dict[int, int]:
    consumer = Consumer(settings.kafka_config(**{"group.id": f"test-ends-{uuid.uuid4()}"}))
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    finally:
        consumer.close()


def committed_offsets(settings, group: str, topic: str) -> dict[int, int]:
    admin = AdminClient(settings.kafka_config())
    parts = [TopicPartition(topic, p) for p in ends(settings, topic)]
    result = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group, parts)])[group].result(15)
    return {tp.partition: tp.offset for tp in result.topic_partitions}


def test_status_reports_lag_per_partition_dead_letters_and_a_topic_of_mixed_framings(services, catalog):
    from ops.pipeline_status import pipeline_status
    from topics.catalog import ConsumerSpec

    single = AvroCodec(load_store(REPO_ROOT / "avro"))
    clean, mixed = (
        fresh_topic(services, "status-clean", partitions=2),
        fresh_topic(services, "status-mixed", 2),
    )
    record = transfer_requested(f"acc-status-{RUN}", 500)
    key, body = record["account_id"].encode(), single.encode("payments.transfer.requested.v1", record)
    produce_raw(services, clean, [(key, body)] * 5)
    # the registry framing's header (magic 0, a schema id) before the same Avro body
    registry_framed = b"\x00\x00\x00\x00\x01" + body[10:]
    produce_raw(services, mixed, [(key, body), (key, registry_framed)])
    spec = ConsumerSpec(f"test_status_{RUN}", "sink", (clean,), ())
    start_at_end(services, spec.group_id, [clean])
    produce_raw(services, clean, [(key, body)] * 3)  # three behind, on the key's partition

    found = pipeline_status(services, catalog, topics=[clean, mixed], consumers=[spec])
    by_topic = {t.topic: t for t in found.topics}
    assert by_topic[clean].framings == {"single-object"} and not by_topic[clean].mixed
    assert by_topic[mixed].mixed and by_topic[mixed].messages == 2
    assert by_topic[clean].messages == 8 and by_topic[clean].last_ms is not None
    [group] = found.groups
    assert group.total_lag == 3 and sorted(n for n in group.lag.values() if n) == [3]
    assert group.members == 0 and group.dead_letters == 0


def test_export_round_trips_wei_beyond_38_digits_exactly_through_parquet(services, tmp_path):
    import pyarrow.parquet as pq

    topic = fresh_topic(services, "export", partitions=1)
    codec = AvroCodec(load_store(REPO_ROOT / "avro"))
    wei = [1, 10**40 + 7, 123_456_789 * 10**50 + 1]  # 1 wei, 41 digits, 59 digits
    events = [transfer_confirmed(w, f"acc-export-{RUN}") for w in wei]
    produce_raw(services, topic, [(e["account_id"].encode(), codec.encode(CONFIRMED, e)) for e in events])

    out = tmp_path / "confirmed.parquet"
    done = cli(services, "export", topic, "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "3 events" in done.stderr
    table = pq.read_table(out)
    units = table.column("transfer.amount.units")
    assert str(units.type).startswith("decimal256")
    assert [int(u) for u in units.to_pylist()] == wei
    assert table.column("transfer.amount.asset").to_pylist() == ["ETH"] * 3
    assert table.column("_offset").to_pylist() == [0, 1, 2]

    csv = tmp_path / "confirmed.csv"
    assert cli(services, "export", topic, "--out", str(csv)).returncode == 0
    assert str(10**40 + 7) in csv.read_text()

    # uint256 reaches 78 digits, past decimal256: the column is text, still exact, and the note says so
    produce_raw(services, topic, [(b"k", codec.encode(CONFIRMED, transfer_confirmed(2**256 - 1)))])
    wide = cli(services, "export", topic, "--out", str(out))
    assert wide.returncode == 0 and "kept as text to stay exact" in wide.stderr
    assert pq.read_table(out).column("transfer.amount.units").to_pylist()[-1] == str(2**256 - 1)


def test_a_partition_and_one_account_replayed_under_live_traffic_change_no_row(db):
    from sinks.registry import SINKS

    topic = fresh_topic(db, "replay", partitions=3)
    codec = AvroCodec(load_store(REPO_ROOT / "avro"))
    accounts = [f"acc-replay-{RUN}-{i}" for i in range(6)]

    def batch(n: int) -> list[tuple[bytes, bytes]]:
        records = [transfer_requested(accounts[i % 6], 100 + i) for i in range(n)]
        return [(r["account_id"].encode(), codec.encode(topic_of_transfers(), r)) for r in records]

    produce_raw(db, topic, batch(60))
    group = f"test-replay-{RUN}"
    runner = SinkRunner(
        db,
        SINKS["transfers"](),
        codec,
        topics=[topic],
        group_id=group,
        input_aliases={topic: topic_of_transfers()},
        linger=0.05,
    )
    url = db.database_url.get_secret_value()
    rows = "SELECT count(*) FROM transfer_requests WHERE account_id LIKE %s"
    traffic_stop = threading.Event()

    def traffic() -> None:  # live traffic: new events keep arriving while the replays run
        while not traffic_stop.is_set():
            produce_raw(db, topic, batch(6))
            traffic_stop.wait(0.2)

    with running(runner.run), psycopg.connect(url, autocommit=True) as conn:
        wait_for(
            lambda: conn.execute(rows, (f"acc-replay-{RUN}-%",)).fetchone()[0] >= 60,
            60,
            what="the first 60 to be written",
        )
        live = threading.Thread(target=traffic, daemon=True)
        live.start()
        try:
            whole = cli(
                db,
                "replay",
                "--topic",
                topic,
                "--as",
                topic_of_transfers(),
                "-p",
                "1",
                "--from-offset",
                "0",
                "--to-offset",
                "19",
                "--into-sink",
                "transfers",
                "--reason",
                "check partition 1",
            )
            one = cli(
                db,
                "replay",
                "--topic",
                topic,
                "--as",
                topic_of_transfers(),
                "--account",
                accounts[2],
                "--from-offset",
                "0",
                "--into-sink",
                "transfers",
                "--reason",
                "check one account",
            )
            consumed = runner.stats.consumed
            wait_for(lambda: runner.stats.consumed > consumed, 30, what="the group to keep consuming")
        finally:
            traffic_stop.set()
            live.join(10)
        assert whole.returncode == 0, whole.stderr
        assert "0 rows changed (a pure replay)" in whole.stdout and " 0 refused" in whole.stdout
        assert one.returncode == 0, one.stderr
        assert "0 rows changed (a pure replay)" in one.stdout
        replayed = int(re.search(r"replay: (\d+) of", one.stdout).group(1))
        assert replayed >= 10  # every event of that account so far, and only those

        # a row lost (what a fixed bug would have written): replaying that account writes it again
        conn.execute(
            "DELETE FROM transfer_requests WHERE ctid = (SELECT ctid FROM transfer_requests "
            "WHERE account_id = %s LIMIT 1)",
            (accounts[2],),
        )
        dry = cli(
            db,
            "replay",
            "--topic",
            topic,
            "--as",
            topic_of_transfers(),
            "--account",
            accounts[2],
            "--from-offset",
            "0",
            "--into-sink",
            "transfers",
            "--dry-run",
        )
        assert re.search(r"transfer_requests\s*│\s*1\s*│\s*0\s*│\s*0", dry.stdout), dry.stdout
        fixed = cli(
            db,
            "replay",
            "--topic",
            topic,
            "--as",
            topic_of_transfers(),
            "--account",
            accounts[2],
            "--from-offset",
            "0",
            "--into-sink",
            "transfers",
            "--reason",
            "restore the lost row",
        )
        assert "1 rows changed" in fixed.stdout
        log = conn.execute(
            "SELECT reason, detail->>'account' FROM operations_log WHERE action = 'replay' ORDER BY id"
        ).fetchall()
        assert log == [
            ("check partition 1", None),
            ("check one account", accounts[2]),
            ("restore the lost row", accounts[2]),
        ]


def test_the_stock_deserializer_check_counts_what_a_registry_based_consumer_cannot_read(services, catalog):
    if not services.schema_registry_url:
        pytest.skip("no schema registry in this environment (containers run without one)")
    from ops.stock_decode import stock_decode

    topic = fresh_topic(services, "stock", partitions=1)
    single = AvroCodec(load_store(REPO_ROOT / "avro"))
    registry = codec_from_settings(services, auto_register=True)
    record = transfer_requested(f"acc-stock-{RUN}", 42)
    produce_raw(
        services,
        topic,
        [(b"k", registry.encode(topic_of_transfers(), record))] * 2
        + [(b"k", single.encode(topic_of_transfers(), record))],
    )
    registry.close()
    [result] = stock_decode(services, catalog, topics=[topic])
    assert (result.decoded, result.failed) == (2, 1)
    assert result.first_failures[0].startswith(f"{topic}/0/2: ")

    # from a time on: only what was produced since, the single-object message before it unread
    since = int(time.time() * 1000)
    registry = codec_from_settings(services, auto_register=True)
    produce_raw(services, topic, [(b"k", registry.encode(topic_of_transfers(), record))])
    registry.close()
    [later] = stock_decode(services, catalog, topics=[topic], from_ms=since)
    assert (later.decoded, later.failed) == (1, 0)
    [nothing] = stock_decode(services, catalog, topics=[topic], from_ms=since + 3_600_000)
    assert (nothing.decoded, nothing.failed) == (0, 0)


def test_registry_commands_write_through_their_repository_functions(db):
    token = "0x" + "ab" * 20
    linked = cli(
        db,
        "connect",
        "link",
        "--provider",
        "stripe",
        "--ref",
        f"ic_{RUN}",
        "--tenant",
        "tenant-1",
        "--account",
        f"acc-link-{RUN}",
    )
    assert linked.returncode == 0, linked.stderr
    watched = cli(
        db, "connect", "watch", "--chain", "ethereum", "--address", token, "--token", "TOK", "--decimals", "6"
    )
    assert watched.returncode == 0, watched.stderr
    again = cli(
        db, "connect", "watch", "--chain", "ethereum", "--address", token, "--token", "TOK", "--decimals", "8"
    )
    assert again.returncode == 2 and "never change once registered" in again.stderr
    wallet = cli(
        db,
        "connect",
        "watch",
        "--chain",
        "ethereum",
        "--address",
        "0x" + "cd" * 20,
        "--account",
        f"acc-link-{RUN}",
        "--tenant",
        "tenant-1",
    )
    assert wallet.returncode == 0, wallet.stderr
    with psycopg.connect(db.database_url.get_secret_value()) as conn:
        assert conn.execute(
            "SELECT account_id FROM provider_links WHERE external_ref = %s", (f"ic_{RUN}",)
        ).fetchone() == (f"acc-link-{RUN}",)
        assert conn.execute(
            "SELECT decimals FROM crypto_assets WHERE chain = 'ethereum' AND symbol = 'TOK'"
        ).fetchone() == (6,)
        assert conn.execute(
            "SELECT account_id FROM chain_wallets WHERE address = %s", ("0x" + "cd" * 20,)
        ).fetchone() == (f"acc-link-{RUN}",)
    assert cli(db, "billing", "invoices").returncode == 0
    assert cli(db, "aml", "flags").returncode == 0
    missing = cli(db, "aml", "case", str(uuid.uuid4()), "--status", "reviewed")
    assert missing.returncode == 1 and "no sandbox flag" in missing.stderr
    check = cli(db, "ledger", "check")
    assert check.returncode == 0 and "0 journals, 0 entries, 0 active holds" in check.stdout + check.stderr


def test_a_demos_own_groups_are_deleted_after_it_and_no_other_group(services):
    from topics.consuming import drop_own_groups

    topic = fresh_topic(services, "demo-groups", partitions=2)
    suffix = f"demo-{RUN}"
    ours = [f"ledgerstream.fees_agent.{suffix}", f"ledgerstream.ledger_sink.{suffix}"]
    others = [f"ledgerstream.fees_agent.{suffix}-later", f"bench-{suffix}"]
    for group in ours + others:
        start_at_end(services, group, [topic])
    assert drop_own_groups(services, suffix) == ours
    admin = AdminClient(services.kafka_config())
    left = {g.group_id for g in admin.list_consumer_groups(request_timeout=10).result().valid}
    assert not set(ours) & left
    assert set(others) <= left
    for future in admin.delete_consumer_groups(others, request_timeout=30).values():
        future.result()
