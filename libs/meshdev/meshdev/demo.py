"""`make demo` / `python -m meshdev.demo`: one purchase through the mesh `make run` started, step
by step, with timings.

It reads the running mesh's state file (`make run` writes `.dev/mesh.json`: gRPC ports, the
database, the mail folder), buys tickets at the demo venue with the test card (a dev-signed buyer
token), and watches each step of the journey as it happens:

  payment confirmed   CreatePayment (then GetPayment) says SUCCEEDED
  webhook             Stripe's payment_intent.succeeded for it was processed by payment (its
                      webhook inbox; skipped when the mesh's Stripe sends no webhooks)
  minted              GetTicketNft says ACTIVE for every ticket (the relay's MintTickets, the
                      minter's transaction on chain)
  email delivered     one confirmation per ticket kept as an .eml file in the mail folder

then prints each ticket's mint address, nft's VerifyOwnership answer (read from the chain) and
the path of its delivered email. A step that does not finish within `--timeout` seconds of the
payment stops the demo with exit code 1, naming the step (and the steps after it that waited
on it); exit code 2 means there was no mesh to talk to or the payment itself was refused.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from meshdev.launcher import DEMO_VENUE, STATE_FILE
from meshdev.standins.smtp import KeptMessage, Mailbox, read_message
from meshkit.auth import TokenMinter, ensure_dev_keys, load_private_key
from meshkit.settings import DEV_ISSUER
from tickettoken.common.v1 import common_pb2
from tickettoken.nft.v1 import nft_pb2, nft_pb2_grpc
from tickettoken.payment.v1 import payment_pb2, payment_pb2_grpc

__all__ = ["STEPS", "Stuck", "main", "run_demo"]

STEPS = ("payment confirmed", "webhook", "minted", "email delivered")
EVENT_NAME = "The Band: Demo Night"
POLL_S = 0.05
EXIT_STUCK = 1
EXIT_NO_MESH = 2


class Stuck(Exception):
    """A step did not finish in time."""

    def __init__(self, step: str, timeout: float, detail: str = "") -> None:
        super().__init__(step)
        self.step = step
        self.timeout = timeout
        self.detail = detail


@dataclass
class Journey:
    """What the demo learned on the way, for the summary."""

    payment: payment_pb2.Payment | None = None
    times: dict[str, float] = field(default_factory=dict)
    tickets: dict[str, nft_pb2.TicketNft] = field(default_factory=dict)
    emails: dict[str, KeptMessage] = field(default_factory=dict)
    ownership: dict[str, nft_pb2.VerifyOwnershipResponse] = field(default_factory=dict)

    @property
    def ticket_ids(self) -> list[str]:
        assert self.payment is not None
        return [t for line in self.payment.line_items for t in line.ticket_ids]


class Demo:
    def __init__(self, state: dict[str, Any], *, tickets: int, timeout: float) -> None:
        self.state = state
        self.tickets = tickets
        self.timeout = timeout
        services = state["services"]
        self.payment_target = f"127.0.0.1:{services['payment']['grpc']}"
        # A mesh started without nft (`make run` with --skip nft) still shows how far a purchase
        # gets: the "minted" step then never finishes.
        nft = services.get("nft")
        self.nft_target = f"127.0.0.1:{nft['grpc']}" if nft else None
        mail = state.get("mail") or {}
        self.mailbox = Mailbox(Path(mail["mail_dir"])) if mail.get("mail_dir") else None
        self.webhooks = bool(state.get("stripe_webhooks", True))
        keys = ensure_dev_keys(Path(state.get("dev_dir") or os.environ.get("DEV_DIR", ".dev")))
        self.minter = TokenMinter(
            load_private_key(keys.private_key_path), kid=keys.kid, issuer=DEV_ISSUER
        )
        self.buyer = f"buyer-demo-{uuid.uuid4().hex[:8]}"
        self.email = f"{self.buyer}@example.com"
        self.journey = Journey()

    def md(self, aud: str, sub: str = "dev-admin", roles: tuple[str, ...] = ("admin",)) -> Any:
        token = self.minter.mint(
            subject=sub, audience=f"tickettoken.{aud}", ttl=600, roles=list(roles)
        )
        return (("authorization", f"Bearer {token}"),)

    # -- the steps --------------------------------------------------------------------------------
    async def pay(self, stub: payment_pb2_grpc.PaymentServiceAsyncStub) -> payment_pb2.Payment:
        event = payment_pb2.EventDetails(event_name=EVENT_NAME, venue_name="Ryman Auditorium")
        event.starts_at.FromDatetime(datetime.now(UTC).replace(microsecond=0) + timedelta(days=30))
        request = payment_pb2.CreatePaymentRequest(
            idempotency_key=str(uuid.uuid4()),
            order_id=f"order-demo-{uuid.uuid4().hex[:10]}",
            venue_id=str(self.state.get("demo_venue") or DEMO_VENUE),
            event_id="event-demo",
            buyer_id=self.buyer,
            currency="USD",
            payment_method_id="pm_card_visa",
            line_items=[
                payment_pb2.LineItem(
                    ticket_type_id="ga",
                    description="General Admission",
                    unit_price=common_pb2.Money(currency="USD", amount_minor=5_000),
                    quantity=self.tickets,
                )
            ],
            buyer_contact=common_pb2.ContactInfo(name="Ada Lovelace", email=self.email),
            event=event,
        )
        md = self.md("payment", self.buyer, ("buyer",))
        reply = await stub.CreatePayment(request, metadata=md, timeout=self.timeout)
        payment: payment_pb2.Payment = reply.payment
        while payment.status != payment_pb2.PAYMENT_STATUS_SUCCEEDED:
            if payment.status in (payment_pb2.PAYMENT_STATUS_FAILED,):
                raise PaymentRefused(
                    f"payment {payment.id} {payment_pb2.PaymentStatus.Name(payment.status)}: "
                    f"{payment.failure_message or payment.failure_code}"
                )
            await asyncio.sleep(POLL_S)
            payment = (
                await stub.GetPayment(
                    payment_pb2.GetPaymentRequest(payment_id=payment.id), metadata=md
                )
            ).payment
        return payment

    async def webhook(self) -> Any:
        """The payment_intent.succeeded delivery processed by payment, from its inbox."""
        assert self.journey.payment is not None
        conn = await asyncpg.connect(self.state["database_url"])
        try:
            return await self._poll(
                lambda: conn.fetchval(
                    "SELECT event_id FROM payment.webhook_inbox WHERE payment_id = $1 "
                    "AND event_type = 'payment_intent.succeeded' AND processed_at IS NOT NULL",
                    uuid.UUID(self.journey.payment.id),  # type: ignore[union-attr]
                )
            )
        finally:
            await conn.close()

    async def minted(self, stub: nft_pb2_grpc.NftServiceAsyncStub) -> None:
        if self.nft_target is None:
            await asyncio.Event().wait()  # no nft in this mesh: never minted
        md = self.md("nft")

        async def check() -> bool | None:
            for ticket_id in self.journey.ticket_ids:
                if ticket_id in self.journey.tickets:
                    continue
                try:
                    reply = await stub.GetTicketNft(
                        nft_pb2.GetTicketNftRequest(ticket_id=ticket_id), metadata=md, timeout=5
                    )
                except grpc.aio.AioRpcError as err:
                    if err.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE):
                        return None
                    raise
                if reply.nft.status != nft_pb2.TICKET_NFT_STATUS_ACTIVE:
                    return None
                self.journey.tickets[ticket_id] = reply.nft
            return True

        await self._poll(check)

    async def emails(self) -> None:
        mailbox = self.mailbox
        if mailbox is None:
            raise Stuck("email delivered", self.timeout, "the mesh has no mail folder")

        seen: set[Path] = set()

        async def check() -> bool | None:
            fresh = [p for p in mailbox.paths() if p not in seen]
            seen.update(fresh)
            for path in fresh:
                message = read_message(path)
                if self.email not in message.rcpt_tos:
                    continue
                text = message.text or ""
                for ticket_id in self.journey.ticket_ids:
                    if ticket_id in text and (message.subject or "").startswith("Your ticket"):
                        self.journey.emails.setdefault(ticket_id, message)
            return True if len(self.journey.emails) == len(self.journey.ticket_ids) else None

        await self._poll(check)

    async def _poll(self, check: Callable[[], Awaitable[Any]]) -> Any:
        while True:
            found = await check()
            if found is not None:
                return found
            await asyncio.sleep(POLL_S)

    # -- the run ----------------------------------------------------------------------------------
    async def run(self, console: Console) -> int:
        columns = (
            SpinnerColumn(finished_text="[green]✓"),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
        )
        started = time.monotonic()
        steps = [s for s in STEPS if self.webhooks or s != "webhook"]
        async with (
            grpc.aio.insecure_channel(self.payment_target) as pay_channel,
            grpc.aio.insecure_channel(self.nft_target or "127.0.0.1:9") as nft_channel,
        ):
            pay: payment_pb2_grpc.PaymentServiceAsyncStub = payment_pb2_grpc.PaymentServiceStub(
                pay_channel
            )
            mint: nft_pb2_grpc.NftServiceAsyncStub = nft_pb2_grpc.NftServiceStub(nft_channel)
            with Progress(*columns, console=console, transient=True) as progress:
                tasks = {step: progress.add_task(step, total=1) for step in steps}

                def done(step: str) -> None:
                    took = time.monotonic() - started
                    self.journey.times[step] = took
                    progress.update(tasks[step], completed=1, description=f"{step}")
                    progress.console.print(f"  ✓ {step:<18} {took:6.2f}s")

                self.journey.payment = await self._step(
                    "payment confirmed", self.pay(pay), self.timeout
                )
                done("payment confirmed")
                payment = self.journey.payment
                progress.console.print(
                    f"    payment {payment.id} for {len(self.journey.ticket_ids)} ticket(s), "
                    f"{payment.total.amount_minor / 100:.2f} {payment.total.currency}"
                )
                watchers = {
                    "webhook": self.webhook(),
                    "minted": self.minted(mint),
                    "email delivered": self.emails(),
                }
                pending = {
                    asyncio.ensure_future(self._step(step, watchers.pop(step), None)): step
                    for step in steps[1:]
                }
                for coro in watchers.values():
                    coro.close()
                deadline = time.monotonic() + self.timeout
                while pending:
                    finished, _ = await asyncio.wait(
                        pending,
                        timeout=max(0.0, deadline - time.monotonic()),
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    if not finished:
                        for future in pending:
                            future.cancel()
                        stuck = sorted(pending.values(), key=steps.index)
                        detail = f"still waiting: {', '.join(stuck)}"
                        if self.nft_target is None:
                            detail += "; nft is not running in this mesh"
                        raise Stuck(stuck[0], self.timeout, detail)
                    for future in finished:
                        step = pending.pop(future)
                        future.result()
                        done(step)
            await self._verify(mint)
        self._summary(console)
        return 0

    async def _step(self, step: str, work: Awaitable[Any], timeout: float | None) -> Any:
        try:
            return await asyncio.wait_for(work, timeout)
        except TimeoutError:
            raise Stuck(step, self.timeout) from None

    async def _verify(self, stub: nft_pb2_grpc.NftServiceAsyncStub) -> None:
        md = self.md("nft")
        for ticket_id, ticket in self.journey.tickets.items():
            self.journey.ownership[ticket_id] = await stub.VerifyOwnership(
                nft_pb2.VerifyOwnershipRequest(
                    ticket_id=ticket_id, wallet=ticket.owner_wallet, verify_metadata=True
                ),
                metadata=md,
                timeout=10,
            )

    def _summary(self, console: Console) -> None:
        for ticket_id in self.journey.ticket_ids:
            ticket = self.journey.tickets[ticket_id]
            answer = self.journey.ownership[ticket_id]
            console.print(f"ticket {ticket_id}", soft_wrap=True)
            console.print(f"  mint address: {ticket.mint_address}", soft_wrap=True)
            console.print(
                f"  VerifyOwnership: owned={str(answer.owned).lower()} "
                f"status={nft_pb2.OwnershipStatus.Name(answer.status)} "
                f"holder={answer.holder_wallet} slot={answer.slot}",
                soft_wrap=True,
            )
            console.print(f"  email: {self.journey.emails[ticket_id].path}", soft_wrap=True)
        total = max(self.journey.times.values())
        console.print(f"demo: ok in {total:.2f}s", soft_wrap=True)


class PaymentRefused(Exception):
    """The payment did not succeed (not a stuck step: the demo cannot go on)."""


async def run_demo(state: dict[str, Any], *, tickets: int, timeout: float, console: Console) -> int:
    demo = Demo(state, tickets=tickets, timeout=timeout)
    console.print(
        f"Buying {tickets} ticket(s) for {EVENT_NAME} as {demo.buyer} ({demo.email}), "
        f"test card pm_card_visa, timeout {timeout:g}s per step"
    )
    try:
        return await demo.run(console)
    except Stuck as stuck:
        detail = f" ({stuck.detail})" if stuck.detail else ""
        console.print(
            f"[red]demo: stuck at step '{stuck.step}': not done within {stuck.timeout:g}s"
            f"{detail}[/red]",
            soft_wrap=True,
        )
        return EXIT_STUCK
    except PaymentRefused as refused:
        console.print(f"[red]demo: {refused}[/red]", soft_wrap=True)
        return EXIT_NO_MESH
    except grpc.aio.AioRpcError as err:
        console.print(
            f"[red]demo: {err.code().name}: {err.details()}[/red] (is the mesh up? make run)",
            soft_wrap=True,
        )
        return EXIT_NO_MESH


def load_state(path: Path) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m meshdev.demo",
        description="make demo: one purchase through the mesh make run started, step by step",
    )
    dev_dir = Path(os.environ.get("DEV_DIR", ".dev"))
    parser.add_argument(
        "--state-file",
        type=Path,
        default=dev_dir / STATE_FILE,
        help="the running mesh's state file (default: make run's, DEV_DIR/mesh.json)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds the payment may take, and each later step from the payment on "
        "(default 30); a step not done by then exits 1 naming it",
    )
    parser.add_argument(
        "--tickets", type=int, default=2, choices=range(1, 5), metavar="1-4", help="default 2"
    )
    args = parser.parse_args(argv)
    console = Console(highlight=False)
    state = load_state(args.state_file)
    if state is None:
        console.print(
            f"[red]demo: no running mesh ({args.state_file} missing): start it with make run[/red]"
        )
        return EXIT_NO_MESH
    return asyncio.run(run_demo(state, tickets=args.tickets, timeout=args.timeout, console=console))


if __name__ == "__main__":
    sys.exit(main())
