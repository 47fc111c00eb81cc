"""`ledgerstream connect ...`: the connectors' processes and their operator commands."""

from __future__ import annotations

import argparse
import os
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ops.console import (
    Parser,
    component_settings,
    err,
    out,
    port_arg,
    positive_int,
    seconds_arg,
    serve_health,
    settings_or_error,
    stop_on_signals,
    topic_pair,
)
from ops.kafka_acl import write_private
from ops.outside import CHAINS as CHAIN_NAMES
from ops.outside import CIRCLE_API_URL, PAYOUT_PROVIDER_URL, SENDER_KEYS, rpc_url_variable, where
from topics.collector import settle_collector
from topics.ports import API_PORTS, WEBHOOK_PORTS
from topics.settings import API, CHAIN_LISTENER, CHAIN_SENDER, PAYOUT_DISPATCHER, WEBHOOKS

PROVIDERS = ("stripe", "plaid", "truelayer", "circle", "sumsub")
SANDBOX_URL = "http://127.0.0.1:18095"
"""The payout provider sandbox (`connect provider-sandbox`)."""
SANDBOX_CREDENTIALS = "provider-sandbox.env"
"""Where in the stack's folder the sandbox leaves the credentials it lets in."""
RPC_URL_HELP = (
    "the node's JSON-RPC endpoint, http:// or https:// (default: $CHAIN_RPC_URL_<CHAIN>, e.g. "
    "CHAIN_RPC_URL_ETHEREUM; the environment keeps a URL's API key off the process list)"
)


def _rpc_url(command: str, args: argparse.Namespace) -> str | None:
    """The node's URL: `--rpc-url`, else the chain's variable; None (said in one line) when neither."""
    url: str | None = args.rpc_url or os.environ.get(rpc_url_variable(args.chain))
    if not url:
        err.print(f"{command}: no node: give --rpc-url or set {rpc_url_variable(args.chain)}", markup=False)
    return url


def connect_api(args: argparse.Namespace) -> int:
    import uvicorn

    from connectors.api import create_app
    from topics.catalog import load_catalog
    from topics.codec import codec_from_settings

    settings = settings_or_error().as_principal(API)
    app = create_app(settings, codec_from_settings(settings), load_catalog())
    err.print(f"command API on http://{args.host}:{args.port}", markup=False)
    if args.admin_port:
        import threading

        from connectors.admin import admin_app

        admin = uvicorn.Server(
            uvicorn.Config(admin_app(app), host=args.admin_host, port=args.admin_port, log_level="warning")
        )
        threading.Thread(target=admin.run, name="admin-port", daemon=True).start()
        admin_url = f"http://{args.admin_host}:{args.admin_port}"
        err.print(f"admin on {admin_url}: /docs, /openapi.json, /metrics", markup=False)
    settle_collector()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_keep_alive=5)
    return 0


def connect_webhooks(args: argparse.Namespace) -> int:
    import uvicorn

    from connectors.webhooks.app import create_app
    from connectors.webhooks.http import BoundedHeadProtocol
    from connectors.webhooks.settings import WebhookSettings
    from topics.catalog import load_catalog
    from topics.codec import codec_from_settings

    settings, hooks = settings_or_error().as_principal(WEBHOOKS), WebhookSettings()
    providers = hooks.providers()
    if not providers:
        err.print(
            "connect webhooks: no provider is configured; set STRIPE_WEBHOOK_SECRETS, SUMSUB_WEBHOOK_SECRET, "
            "PLAID_WEBHOOK_JWKS, TRUELAYER_WEBHOOK_JWKS or CIRCLE_WEBHOOK_KEYS",
            markup=False,
        )
        return 2
    err.print(
        f"webhooks on http://{args.host}:{args.port}/v1/webhooks/{{{','.join(sorted(providers))}}}"
        f" ({args.workers} worker{'s' if args.workers > 1 else ''})",
        markup=False,
    )
    if args.admin_port:
        _serve_metrics(args.admin_host, args.admin_port, args.workers)
        err.print(f"metrics on http://{args.admin_host}:{args.admin_port}/metrics", markup=False)
    # httptools (llhttp) with the request head bounded to 16 KiB (connectors/webhooks/http.py):
    # about 20% more deliveries a second than h11 on this machine class
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "log_level": "warning",
        "timeout_keep_alive": 5,
        "http": BoundedHeadProtocol,
    }
    if args.workers > 1:
        uvicorn.run("connectors.webhooks.app:from_environment", factory=True, workers=args.workers, **options)
    else:
        app = create_app(settings, hooks, codec_from_settings(settings), load_catalog(), providers)
        settle_collector()
        uvicorn.run(app, **options)
    return 0


def _serve_metrics(host: str, port: int, workers: int) -> None:
    """Prometheus metrics on their own (admin) port, never the public one. Several workers write
    their metrics to a shared folder that this process reads (prometheus_client's multiprocess mode)."""
    import os
    import tempfile

    from prometheus_client import CollectorRegistry, start_http_server

    if workers > 1:
        from prometheus_client import multiprocess

        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ledgerstream-metrics-")
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        start_http_server(port, addr=host, registry=registry)
    else:
        start_http_server(port, addr=host)


def connect_chain(args: argparse.Namespace) -> int:
    import dataclasses

    from web3 import Web3

    from connectors.chain import CHAINS, ChainListener, DeepReorg, WrongChain
    from topics.catalog import load_catalog
    from topics.codec import codec_from_settings

    rpc_url = _rpc_url("connect chain", args)
    if rpc_url is None:
        return 2
    settings = settings_or_error().as_principal(CHAIN_LISTENER)
    spec = CHAINS[args.chain]
    if args.confirmations is not None:
        spec = dataclasses.replace(spec, confirmations=args.confirmations)
    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 15}))
    if not w3.is_connected():
        err.print(f"connect chain: no JSON-RPC node answers at {where(rpc_url)}", markup=False)
        return 1
    stop = stop_on_signals()
    try:
        listener = ChainListener(
            settings, codec_from_settings(settings), load_catalog(), w3, spec, start_block=args.from_block
        )
    except WrongChain as e:
        err.print(f"connect chain: {e}", markup=False)
        return 2
    err.print(
        f"chain listener: {spec.name} (chain id {listener.chain_id}) at {where(rpc_url)}, "
        f"{spec.confirmations} confirmations; events go to the outbox",
        markup=False,
    )
    try:
        health = serve_health(args.metrics_port, listener.probe)
        try:
            settle_collector()
            emitted = listener.run(stop=stop, poll=args.poll)
        finally:
            if health is not None:
                health.close()
    except DeepReorg as e:
        err.print(f"connect chain: {e}", markup=False)
        return 1
    err.print(f"chain listener: {emitted}", markup=False)
    return 0


def connect_chain_sender(args: argparse.Namespace) -> int:
    import json
    import stat

    from web3 import Web3

    from connectors.chain import CHAINS, WrongChain
    from connectors.chain_sender import ChainSender, LocalKeys
    from topics.catalog import load_catalog
    from topics.codec import codec_from_settings

    rpc_url = _rpc_url("connect chain-sender", args)
    if rpc_url is None:
        return 2
    if not (args.keys or os.environ.get(SENDER_KEYS)):
        err.print(f"connect chain-sender: no wallet keys: give --keys or set {SENDER_KEYS}", markup=False)
        return 2
    keys_file = Path(args.keys or os.environ[SENDER_KEYS])
    try:
        mode = keys_file.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            err.print(f"connect chain-sender: {keys_file} is readable by others; chmod 600 it", markup=False)
            return 2
        keys = {
            address: bytes.fromhex(key.removeprefix("0x"))
            for address, key in json.loads(keys_file.read_text()).items()
        }
    except (OSError, ValueError, AttributeError) as e:
        err.print(
            f"connect chain-sender: {keys_file}: {e} (a JSON object of address: hex private key)",
            markup=False,
        )
        return 2
    settings = settings_or_error().as_principal(CHAIN_SENDER)
    spec = CHAINS[args.chain]
    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 15}))
    if not w3.is_connected():
        err.print(f"connect chain-sender: no JSON-RPC node answers at {where(rpc_url)}", markup=False)
        return 1
    if spec.chain_id is not None and int(w3.eth.chain_id) != spec.chain_id:
        err.print(f"connect chain-sender: {WrongChain(f'the node is not {spec.name}')}", markup=False)
        return 2
    sender = ChainSender(settings, codec_from_settings(settings), load_catalog(), w3, spec, LocalKeys(keys))
    err.print(
        f"chain sender: reserved CRYPTO transfers on {spec.name} from {len(keys)} wallets", markup=False
    )
    health = serve_health(args.metrics_port, sender.probe)
    try:
        settle_collector()
        stats = sender.run(stop=stop_on_signals(), poll=args.poll)
    finally:
        if health is not None:
            health.close()
    err.print(
        f"chain sender: {stats.signed} signed, {stats.broadcast} broadcast, {stats.failed} failed",
        markup=False,
    )
    return 0


def connect_watch(args: argparse.Namespace) -> int:
    from connectors.chain import AssetConflict, watch_token, watch_wallet
    from sinks.migrate import connect

    address = args.address.lower()
    if not re.fullmatch(r"0x[0-9a-f]{40}", address):
        err.print(f"connect watch: {args.address!r} is not a 20-byte hex address", markup=False)
        return 2
    if args.token and (args.decimals is None or not 0 <= args.decimals <= 36):
        err.print("connect watch: --token needs --decimals between 0 and 36", markup=False)
        return 2
    if args.account and not args.tenant:
        err.print("connect watch: --account needs --tenant", markup=False)
        return 2
    with connect(settings_or_error().database_url.get_secret_value()) as conn:
        if args.token:
            try:
                watch_token(conn, args.chain, args.token, args.decimals, address)
            except AssetConflict as e:
                err.print(f"connect watch: {e}", markup=False)
                return 2
            out.print(
                f"watching {args.token} ({args.decimals} decimals) at {address} on {args.chain}", markup=False
            )
            return 0
        watch_wallet(conn, args.chain, address, args.tenant, args.account)
    out.print(f"watching wallet {address} on {args.chain} for {args.tenant}/{args.account}", markup=False)
    return 0


def connect_purge(args: argparse.Namespace) -> int:
    from connectors.retention import purge
    from sinks.migrate import connect

    with connect(settings_or_error().database_url.get_secret_value()) as conn:
        done = purge(conn, outbox_days=args.outbox_days, inbox_days=args.inbox_days, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    out.print(
        f"purge: {verb} {done.idempotency_keys} expired idempotency keys, {done.outbox_rows} published "
        f"outbox rows older than {args.outbox_days} days, {done.inbox_rows} settled inbox rows older than "
        f"{args.inbox_days} days",
        markup=False,
    )
    return 0


def connect_link(args: argparse.Namespace) -> int:
    from connectors.accounts import link_provider
    from sinks.migrate import connect

    with connect(settings_or_error().database_url.get_secret_value()) as conn:
        link_provider(conn, args.provider, args.ref, args.tenant, args.account)
    out.print(f"linked {args.provider} {args.ref} to {args.tenant}/{args.account}", markup=False)
    return 0


def connect_outbox_relay(args: argparse.Namespace) -> int:
    from connectors.outbox import OutboxRelay
    from topics.catalog import load_catalog
    from topics.codec import codec_from_settings

    settings = settings_or_error() if args.operator else component_settings("outbox_relay")
    stop = stop_on_signals()
    relay = OutboxRelay(
        settings,
        codec_from_settings(settings),
        load_catalog(),
        batch_size=args.batch_size,
        redirect=dict(args.redirect or []),
    )
    err.print("outbox relay: publishing pending rows in order per account", markup=False)
    health = serve_health(args.metrics_port, relay)
    try:
        settle_collector()
        stats = relay.run(stop=stop, idle_exit=args.idle_exit)
    finally:
        if health is not None:
            health.close()
    err.print(
        f"outbox relay: {stats.published} published in {stats.batches} batches, {stats.failures} failures, "
        f"{stats.refusals} refusals",
        markup=False,
    )
    return 0


def connect_outbox_failed(args: argparse.Namespace) -> int:
    from connectors.outbox import failed_rows, retry_failed
    from sinks.migrate import connect

    with connect(settings_or_error().database_url.get_secret_value()) as conn:
        rows = failed_rows(conn, args.account)
        for row in rows:
            out.print(
                f"{row.id}  {row.account}  {row.topic}  {row.event_type}  attempts {row.attempts}  "
                f"since {row.created_at}  {row.error}",
                markup=False,
            )
        if not args.retry:
            out.print(f"outbox: {len(rows)} failed rows (each holds its account's later rows)", markup=False)
            return 1 if rows else 0
        done = retry_failed(conn, args.account)
    out.print(f"outbox: {done} failed rows put back in turn; the relay publishes them first", markup=False)
    return 0


def add_connect_commands(sub: Any, command: Callable[..., Any]) -> None:
    """Register `connect` and its actions on the top-level subparsers."""
    conn_p = sub.add_parser("connect", help="connectors: the only code that talks to the outside world")
    conn_sub = conn_p.add_subparsers(dest="action", required=True, parser_class=Parser, metavar="ACTION")
    api = command(conn_sub, "api", connect_api, "serve the command API (/v1/...; OpenAPI on the admin port)")
    api.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    api.add_argument("--port", type=positive_int, default=API_PORTS[0], help=f"port (default {API_PORTS[0]})")
    api.add_argument(
        "--admin-host", default="127.0.0.1", help="address of the admin port (default 127.0.0.1)"
    )
    api.add_argument(
        "--admin-port",
        type=int,
        default=API_PORTS[1],
        help=f"port of /docs, /openapi.json and /metrics (default {API_PORTS[1]}; 0: none)",
    )
    wh = command(
        conn_sub,
        "webhooks",
        connect_webhooks,
        "serve provider webhooks (Stripe, Plaid, TrueLayer, Circle, Sumsub) at /v1/webhooks/<provider>",
    )
    wh.epilog = (
        "Keys come from the environment; a provider without them is not served: STRIPE_WEBHOOK_SECRETS "
        "(comma-separated), SUMSUB_WEBHOOK_SECRET, PLAID_WEBHOOK_JWKS and TRUELAYER_WEBHOOK_JWKS "
        "(JSON Web Key Sets), CIRCLE_WEBHOOK_KEYS (JSON {key id: base64 DER}). "
        "Limits: WEBHOOK_MAX_BODY_BYTES, WEBHOOK_READ_TIMEOUT_SECONDS, WEBHOOK_RATE_PER_SECOND, "
        "WEBHOOK_BURST, WEBHOOK_DEDUPE_TTL_SECONDS."
    )
    dp = command(
        conn_sub,
        "dispatcher",
        connect_dispatcher,
        "send reserved bank transfers to their payout provider (SENT_TO_PROVIDER)",
    )
    dp.epilog = (
        "Credentials come from the environment: TRUELAYER_CLIENT_ID and TRUELAYER_CLIENT_SECRET (its access "
        "token), TRUELAYER_SIGNING_KEY_ID and TRUELAYER_SIGNING_KEY (the PEM private key each request is "
        "signed with), TRUELAYER_AUTH_URL (default: the --provider-url's host), CIRCLE_API_KEY."
    )
    dp.add_argument(
        "--provider-url",
        help=f"the payout provider's API (default: ${PAYOUT_PROVIDER_URL}, else {SANDBOX_URL})",
    )
    dp.add_argument("--merchant-account", default="ma-ledgerstream", help="the merchant account paid from")
    dp.add_argument(
        "--circle-url", help=f"Circle's API (default: ${CIRCLE_API_URL}, else the --provider-url)"
    )
    dp.add_argument(
        "--circle-wallet", default="1000216185", help="the Circle wallet ACH payouts are paid from"
    )
    dp.add_argument(
        "--circle-destination",
        default="0f9a1c3e-0000-4000-8000-00000000ac01",
        help="the Circle bank account (wire) id paid to",
    )
    dp.add_argument("--poll", type=seconds_arg, default=0.5, help="seconds between looks (default 0.5)")
    dp.add_argument("--idle-exit", type=seconds_arg, default=None, help="stop after this many idle seconds")
    dp.add_argument(
        "--metrics-port",
        type=port_arg,
        help="serve /healthz, /readyz and /metrics on this port (0 picks a free one; default: none)",
    )
    sb = command(
        conn_sub,
        "provider-sandbox",
        connect_provider_sandbox,
        "a local stand-in for TrueLayer's and Circle's payout APIs (signed webhooks)",
    )
    sb.add_argument(
        "--webhook-url",
        default=f"http://127.0.0.1:{WEBHOOK_PORTS[0]}/v1/webhooks/truelayer",
        help="where TrueLayer's payout webhooks go (Circle's: .../circle beside it)",
    )
    sb.add_argument(
        "--credentials",
        help="where to write the dispatcher's credentials for this sandbox, owner-only "
        f"(default .stack/{SANDBOX_CREDENTIALS})",
    )
    sb.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sb.add_argument("--port", type=positive_int, default=18095, help="port (default 18095)")
    wh.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    wh.add_argument(
        "--port", type=positive_int, default=WEBHOOK_PORTS[0], help=f"port (default {WEBHOOK_PORTS[0]})"
    )
    wh.add_argument(
        "--admin-host", default="127.0.0.1", help="address of the metrics port (default 127.0.0.1)"
    )
    wh.add_argument(
        "--admin-port",
        type=int,
        default=WEBHOOK_PORTS[1],
        help=f"port of /metrics, apart from the public one (default {WEBHOOK_PORTS[1]}; 0: none)",
    )
    wh.add_argument(
        "--workers", type=positive_int, default=1, help="processes (default 1; rate limits are per process)"
    )
    cs = command(
        conn_sub,
        "chain-sender",
        connect_chain_sender,
        "sign and broadcast reserved CRYPTO transfers from each account's wallet",
    )
    cs.add_argument("--chain", choices=CHAIN_NAMES, required=True)
    cs.add_argument("--rpc-url", help=RPC_URL_HELP)
    cs.add_argument(
        "--keys",
        help=f"a mode-0600 JSON file of wallet address: hex private key (default: ${SENDER_KEYS})",
    )
    cs.add_argument("--poll", type=seconds_arg, default=1.0, help="seconds between looks (default 1)")
    cs.add_argument(
        "--metrics-port",
        type=port_arg,
        help="serve /healthz, /readyz and /metrics on this port (0 picks a free one; default: none)",
    )
    ch = command(
        conn_sub, "chain", connect_chain, "follow an EVM chain for transfers touching watched wallets"
    )
    ch.add_argument("--chain", choices=CHAIN_NAMES, required=True)
    ch.add_argument(
        "--metrics-port",
        type=port_arg,
        help="serve /healthz, /readyz and /metrics on this port (0 picks a free one; default: none)",
    )
    ch.add_argument("--rpc-url", help=RPC_URL_HELP)
    ch.add_argument(
        "--confirmations",
        type=positive_int,
        help="blocks before a transfer is confirmed "
        "(default: ethereum 12, polygon 128, arbitrum and optimism 20)",
    )
    ch.add_argument(
        "--from-block", type=positive_int, help="first block when there is no checkpoint (default: head)"
    )
    ch.add_argument(
        "--poll", type=seconds_arg, default=2.0, help="seconds between polls for new blocks (default 2)"
    )
    wa = command(conn_sub, "watch", connect_watch, "watch a wallet (for an account) or an ERC-20 token")
    wa.add_argument("--chain", choices=CHAIN_NAMES, required=True)
    wa.add_argument("--address", required=True, help="the wallet's or the token contract's address")
    group = wa.add_mutually_exclusive_group(required=True)
    group.add_argument("--account", help="our account the wallet belongs to (with --tenant)")
    group.add_argument("--token", help="the token's symbol: watch its Transfer logs (with --decimals)")
    wa.add_argument("--tenant", help="the tenant that owns the account")
    wa.add_argument("--decimals", type=int, help="the token's decimals")
    pg = command(
        conn_sub, "purge", connect_purge, "delete expired idempotency keys, old outbox and inbox rows"
    )
    pg.add_argument(
        "--outbox-days", type=positive_int, default=7, help="keep published outbox rows (default 7)"
    )
    pg.add_argument(
        "--inbox-days", type=positive_int, default=30, help="keep settled inbox rows (default 30)"
    )
    pg.add_argument("--dry-run", action="store_true", help="count what would be deleted, delete nothing")
    ln = command(conn_sub, "link", connect_link, "link a provider's id (a card, a wallet...) to an account")
    ln.add_argument("--provider", choices=PROVIDERS, required=True, help="the provider")
    ln.add_argument("--ref", required=True, help="the provider's id (card, customer, wallet, applicant)")
    ln.add_argument("--tenant", required=True, help="the tenant that owns the account")
    ln.add_argument("--account", required=True, help="our account id")
    of = command(
        conn_sub,
        "outbox-failed",
        connect_outbox_failed,
        "list the outbox rows Kafka refused after every retry (exit 1 when any), or --retry them",
    )
    of.add_argument("--account", help="only this account's rows (default: every account)")
    of.add_argument(
        "--retry",
        action="store_true",
        help="put the rows back in turn once their cause is fixed (a topic's ACL, its size limit)",
    )
    rl = command(
        conn_sub, "outbox-relay", connect_outbox_relay, "publish outbox rows to Kafka, in order per account"
    )
    rl.add_argument(
        "--batch-size", type=positive_int, default=500, help="most rows per transaction (default 500)"
    )
    rl.add_argument("--idle-exit", type=seconds_arg, default=None, help="stop after this many idle seconds")
    rl.add_argument(
        "--metrics-port",
        type=port_arg,
        help="serve /healthz, /readyz and /metrics on this port (0 picks a free one; default: none)",
    )
    rl.add_argument(
        "--redirect",
        type=topic_pair,
        action="append",
        metavar="TOPIC=COPY",
        help="publish TOPIC's rows to COPY instead, e.g. a benchmark's scratch copy (repeatable)",
    )
    rl.add_argument(
        "--operator",
        action="store_true",
        help="run as the operator principal, not the relay's own (to publish to a scratch copy)",
    )


def connect_dispatcher(args: argparse.Namespace) -> int:
    from connectors.payouts import (
        CirclePayouts,
        PayoutClient,
        PayoutCredentials,
        PayoutDispatcher,
        PayoutError,
        TrueLayerPayouts,
    )
    from topics.catalog import load_catalog
    from topics.codec import codec_from_settings

    try:
        credentials = PayoutCredentials.from_environment(os.environ)
    except PayoutError as e:
        err.print(
            f"connect dispatcher: {e} (`connect provider-sandbox` writes its .stack/{SANDBOX_CREDENTIALS})",
            markup=False,
        )
        return 2
    settings = settings_or_error().as_principal(PAYOUT_DISPATCHER)
    stop = stop_on_signals()
    provider_url = args.provider_url or os.environ.get(PAYOUT_PROVIDER_URL) or SANDBOX_URL
    circle_url = args.circle_url or os.environ.get(CIRCLE_API_URL) or provider_url
    with (
        TrueLayerPayouts(provider_url, args.merchant_account, credentials.truelayer) as truelayer,
        CirclePayouts(
            circle_url, args.circle_wallet, args.circle_destination, credentials.circle_api_key
        ) as circle,
    ):
        routes: dict[str, PayoutClient] = {"SEPA": truelayer, "FASTER_PAYMENTS": truelayer, "ACH": circle}
        dispatcher = PayoutDispatcher(settings, codec_from_settings(settings), load_catalog(), routes)
        err.print(
            f"payout dispatcher: SEPA and Faster Payments to TrueLayer at {where(provider_url)}, "
            f"ACH to Circle at {where(circle_url)}",
            markup=False,
        )
        health = serve_health(args.metrics_port, dispatcher.probe)
        try:
            settle_collector()
            sent = dispatcher.run(stop=stop, poll=args.poll, idle_exit=args.idle_exit)
        finally:
            if health is not None:
                health.close()
    err.print(f"payout dispatcher: {sent} payouts sent", markup=False)
    return 0


def connect_provider_sandbox(args: argparse.Namespace) -> int:
    import uvicorn

    from ops.dev import webhook_senders
    from ops.dev.provider_sandbox import create_sandbox

    keys = webhook_senders.ProviderKeys()
    circle_url = args.webhook_url.rsplit("/", 1)[0] + "/circle"
    trusted = keys.environment()
    err.print(
        f"provider sandbox on http://{args.host}:{args.port} (/v3/payouts TrueLayer, /v1/payouts Circle); "
        f"webhooks to {args.webhook_url} and {circle_url}. The webhook service must trust its signing keys: "
        f"TRUELAYER_WEBHOOK_JWKS='{trusted['TRUELAYER_WEBHOOK_JWKS']}' "
        f"CIRCLE_WEBHOOK_KEYS='{trusted['CIRCLE_WEBHOOK_KEYS']}'",
        markup=False,
    )
    path = Path(args.credentials) if args.credentials else settings_or_error().stack_dir / SANDBOX_CREDENTIALS
    write_private(path, "".join(f"{k}={shlex.quote(v)}\n" for k, v in keys.payout_environment().items()))
    err.print(
        f"the dispatcher's credentials for this sandbox are in {path} (`set -a; . {path}; set +a`)",
        markup=False,
    )
    app = create_sandbox(
        args.webhook_url,
        keys.truelayer,
        keys.payouts(),
        circle_url=circle_url,
        circle_sign=lambda body, path: keys.circle(body),
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
