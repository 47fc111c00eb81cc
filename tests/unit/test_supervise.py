"""`ledgerstream run`'s plan from the catalog, and the supervisord configuration it writes."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest
from supervisor.options import ServerOptions

from ops.supervise import START_RETRIES, Worker, config, plan
from topics.errors import LedgerstreamError
from topics.ports import METRICS_BASE


def test_the_default_plan_runs_every_catalog_consumer_once_then_the_connectors(catalog):
    workers = plan(catalog, webhooks=False)
    consumers = [w.component for w in workers if w.kind in ("agent", "sink")]
    assert sorted(consumers) == sorted(catalog.consumers)
    assert [w.name for w in workers][-2:] == ["outbox_relay", "api"]
    ports = [w.metrics_port for w in workers if w.kind != "connector" or w.name == "outbox_relay"]
    assert ports == list(range(METRICS_BASE, METRICS_BASE + len(ports)))
    for w in workers:
        if w.kind in ("agent", "sink"):
            assert w.args[:2] == (w.kind, w.component.rsplit("_", 1)[0])
            assert w.probe == f"http://127.0.0.1:{w.metrics_port}/readyz"


def test_the_checked_in_deployment_files_are_what_the_catalog_renders(catalog):
    from ops.deploy import drifted

    assert drifted(catalog) == [], "run `ledgerstream deploy render`"


def test_prometheus_and_compose_name_every_worker_of_the_deployment(catalog):
    from ops.deploy import OUTSIDE, compose, dns_name, kubernetes, prometheus

    workers = plan(catalog, offset=0, outside=OUTSIDE)
    scraped = {(c["names"][0], c["port"]) for c in prometheus(catalog)["scrape_configs"][1]["dns_sd_configs"]}
    assert scraped == {(dns_name(w), w.metrics_port) for w in workers}
    services = compose(catalog)["services"]
    for w in workers:
        assert services[dns_name(w)]["command"][: len(w.args)] == list(w.args)
    scaled = {
        d["metadata"]["name"]: d["spec"]
        for docs in kubernetes(catalog).values()
        for d in docs
        if d["kind"] == "ScaledObject"
    }
    assert set(scaled) == {dns_name(w) for w in workers if w.kind in ("agent", "sink")}
    assert scaled["fees-agent"]["maxReplicaCount"] == catalog.money_partitions
    assert scaled["fees-agent"]["triggers"][0]["metadata"]["consumerGroup"] == "ledgerstream.fees_agent"


def test_only_selects_by_group_consumer_short_name_or_connector(catalog):
    def names(*only: str) -> list[str]:
        return [w.name for w in plan(catalog, only=list(only))]

    assert names("fees") == ["fees_agent", "fees_sink"]
    assert names("fees_agent", "outbox-relay") == ["fees_agent", "outbox_relay"]
    assert set(names("agents")) == {c.name for c in catalog.consumers.values() if c.kind == "agent"}
    assert names("connectors") == ["outbox_relay", "api", "webhooks"]
    assert "webhooks" not in [w.name for w in plan(catalog, only=["connectors"], webhooks=False)]


def test_several_workers_per_group_are_numbered_with_ports_of_their_own(catalog):
    workers = plan(catalog, only=["ledger"], workers=3, metrics_base=9500)
    assert [w.name for w in workers] == [f"ledger_{k}-{i}" for k in ("agent", "sink") for i in range(3)]
    assert [w.metrics_port for w in workers] == list(range(9500, 9506))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"only": ["fess"]}, "unknown fess"),
        ({"workers": 13}, "13: status_agent's inputs have 12 partitions"),
    ],
)
def test_a_plan_that_cannot_work_is_refused_in_one_line(catalog, kwargs, message):
    with pytest.raises(LedgerstreamError, match=message):
        plan(catalog, **kwargs)


def test_supervisord_reads_the_configuration_back_with_each_argument_intact(tmp_path):
    (tmp_path / "logs").mkdir()
    odd = '50% of it\'s "quoted"'
    workers = [
        Worker("fees_agent", "fees_agent", "agent", ("agent", "fees", "--note", odd), 9400, "http://x")
    ]
    (tmp_path / "supervisord.conf").write_text(config(workers, tmp_path, python="/usr/bin/python3"))
    options = ServerOptions()
    options.realize(args=["-c", str(tmp_path / "supervisord.conf")])
    [group] = options.process_group_configs
    [program] = group.process_configs
    assert program.name == "fees_agent"
    assert shlex.split(program.command) == [
        "/usr/bin/python3",
        "-m",
        "ops.cli",
        "agent",
        "fees",
        "--note",
        odd,
    ]
    assert program.startretries == START_RETRIES
    assert program.stopsignal == 15 and program.killasgroup
    assert options.logfile == str(tmp_path / "supervisord.log")


def test_alerts_and_the_dashboard_name_only_metrics_the_workers_export():
    import json
    import re
    from pathlib import Path

    import yaml
    from prometheus_client import REGISTRY

    import connectors.outbox  # noqa: F401  (registers the relay's metrics)
    import topics.runtime  # noqa: F401  (registers the consumers' metrics)

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    exported = {m.name + end for m in REGISTRY.collect() for end in suffixes.get(m.type, ("",))}
    ops = Path(__file__).parents[2] / "ops"
    rules = yaml.safe_load((ops / "alerts.yml").read_text())["groups"][0]["rules"]
    panels = json.loads((ops / "grafana" / "dashboards" / "ledgerstream.json").read_text())["panels"]
    expressions = [r["expr"] for r in rules] + [t["expr"] for p in panels for t in p["targets"]]
    named = {n for e in expressions for n in re.findall(r"\b(?:ledgerstream|kafka_consumergroup)_\w+", e)}
    assert named and named <= exported, named - exported
    assert {r["alert"] for r in rules} >= {
        "ConsumerLagGrowing",
        "PartitionStuck",
        "DeadLettersArriving",
        "OutboxRowFailed",
        "WorkerDown",
    }


def test_replay_offers_every_registered_sink():
    from ops.cli_operate import SINK_NAMES
    from sinks.registry import SINKS

    assert sorted(SINK_NAMES) == sorted(SINKS)


def test_a_polling_connector_is_ready_after_a_good_turn_and_alive_while_it_turns():
    from topics.health import LoopProbe

    probe = LoopProbe("payout dispatcher", stall_seconds=0.05)
    assert probe.live()[0] and not probe.ready()[0]  # alive from the start, ready after one turn
    probe.turned(True)
    assert probe.ready()[0]
    probe.turned(False, "connection refused")
    ok, detail = probe.ready()
    assert not ok and detail["error"] == "connection refused"
    import time

    time.sleep(0.06)  # the stall itself: no turn for longer than the threshold
    assert not probe.live()[0]


def test_the_webhook_service_is_deployed_public_with_its_providers_keys(catalog):
    from ops.deploy import compose, kubernetes

    deployment, service = kubernetes(catalog)["webhooks.yaml"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {"secretRef": {"name": "ledgerstream-webhooks"}} in container["envFrom"]
    assert {"name": "http", "containerPort": 18090} in container["ports"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": 18090}
    assert service["kind"] == "Service" and service["spec"]["ports"][0]["targetPort"] == "http"
    assert not any(e["name"].startswith("KAFKA_SASL") for e in container["env"]), "it writes the outbox only"
    hooks = compose(catalog)["services"]["webhooks"]
    assert hooks["ports"] == ["18090:18090"] and hooks["env_file"][0]["required"] is False


def test_outside_connectors_run_only_where_the_environment_configures_them():
    from ops.outside import Outside

    assert Outside.from_environment({}) == Outside()
    env = {
        "CHAIN_RPC_URL_POLYGON": "https://polygon.example/v2/k3y",
        "CHAIN_RPC_URL_ETHEREUM": "http://n:8545",
    }
    assert Outside.from_environment(env) == Outside(chains=("ethereum", "polygon"))
    assert Outside.from_environment({**env, "CHAIN_SENDER_KEYS": "/k.json"}).chain_sender
    assert not Outside.from_environment({"CHAIN_SENDER_KEYS": "/k.json"}).chain_sender, (
        "a sender needs a node"
    )
    assert Outside.from_environment({"PAYOUT_PROVIDER_URL": "https://api.truelayer.com"}).payouts
    said = " ".join(Outside.from_environment(env).left_out())
    assert "CHAIN_SENDER_KEYS" in said and "PAYOUT_PROVIDER_URL" in said and "CHAIN_RPC_URL" not in said


def test_outside_connectors_follow_the_relay_with_ports_of_their_own(catalog):
    from ops.outside import Outside

    assert not [w for w in plan(catalog) if w.component.startswith(("chain", "payout"))], "none unconfigured"
    outside = Outside(chains=("ethereum", "polygon"), chain_sender=True, payouts=True)
    workers = plan(catalog, outside=outside, webhooks=False)
    names = [w.name for w in workers if w.kind == "connector"]
    assert names == [
        "outbox_relay",
        "chain_listener_ethereum",
        "chain_listener_polygon",
        "chain_sender_ethereum",
        "chain_sender_polygon",
        "payout_dispatcher",
        "api",
    ]
    ports = [w.metrics_port for w in workers if w.kind != "connector" or w.name != "api"]
    assert ports == list(range(METRICS_BASE, METRICS_BASE + len(ports)))
    polygon = next(w for w in workers if w.name == "chain_listener_polygon")
    assert polygon.args[:4] == ("connect", "chain", "--chain", "polygon")
    assert polygon.probe == f"http://127.0.0.1:{polygon.metrics_port}/readyz"
    assert "--rpc-url" not in polygon.args, "a node's URL (its API key) stays in the environment"

    def names_of(*only: str) -> list[str]:
        return [w.name for w in plan(catalog, only=list(only), outside=outside)]

    assert names_of("chain_listener") == ["chain_listener_ethereum", "chain_listener_polygon"]
    assert names_of("chain-sender-polygon", "payout_dispatcher") == [
        "chain_sender_polygon",
        "payout_dispatcher",
    ]


def test_a_node_url_is_printed_without_its_key():
    from ops.outside import where

    assert where("https://mainnet.infura.io/v3/0123456789abcdef") == "https://mainnet.infura.io"
    assert where("http://user:secret@127.0.0.1:8545/?key=k") == "http://127.0.0.1:8545"
    assert where("not a url") == "an unparsable URL"


def test_a_chain_listener_without_a_node_is_refused_in_one_line():
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAIN_RPC_URL_")}
    done = subprocess.run(
        [sys.executable, "-m", "ops.cli", "connect", "chain", "--chain", "optimism"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "connect chain: no node: give --rpc-url or set CHAIN_RPC_URL_OPTIMISM"


def test_chain_listeners_and_the_dispatcher_are_deployed_behind_their_configuration(catalog):
    from ops.deploy import compose, kubernetes

    services = compose(catalog)["services"]
    listener = services["chain-listener-arbitrum"]
    assert listener["profiles"] == ["chains"]
    assert listener["env_file"] == [{"path": "../../.env.chains", "required": False}]
    assert services["payout-dispatcher"]["profiles"] == ["payouts"]
    assert not [s for s in services if s.startswith("chain-sender")], "its keys file cannot be mounted 0600"
    files = kubernetes(catalog)
    (deployment,) = files["chain-listener-arbitrum.yaml"]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}, "one listener per chain, also in a rollout"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {"secretRef": {"name": "ledgerstream-chains"}} in container["envFrom"]
    database = next(e for e in container["env"] if e["name"] == "DATABASE_URL")
    assert database["valueFrom"]["secretKeyRef"]["name"] == "ledgerstream-database-chain-listener"
    assert not any(e["name"].startswith("KAFKA_SASL") for e in container["env"]), "it writes the outbox only"


def test_the_chains_run_knows_are_the_chains_a_listener_follows():
    from connectors.chain import CHAINS as SPECS
    from ops.outside import CHAINS

    assert set(CHAINS) == set(SPECS)
