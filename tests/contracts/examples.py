"""Well-formed requests for every kind of RPC, shaped like the ones the services' tests, benches
and docs send: the contract rules must accept them, and the bad-input property test mutates them
one field at a time to reach past the rules into the handlers."""

from __future__ import annotations

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message


def _timestamp(when: str) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromJsonString(when)
    return stamp


def valid_requests() -> list[Message]:
    """Requests the services accept, shaped like the ones their tests, benches and docs send."""
    from tickettoken.common.v1 import common_pb2 as c
    from tickettoken.integration.v1 import integration_pb2 as i
    from tickettoken.nft.v1 import nft_pb2 as n
    from tickettoken.notify.v1 import notify_pb2 as no
    from tickettoken.payment.v1 import payment_pb2 as p

    key = "0b6a4f5e-9a7b-4c1d-8e2f-3a4b5c6d7e8f"
    usd = c.Money(currency="USD", amount_minor=10_000)
    line = p.LineItem(
        ticket_type_id="ga", description="General Admission", unit_price=usd, quantity=1
    )
    ticket = n.TicketToMint(
        ticket_id="pay-1a2b3c-t0",
        event_name="The Band: Fall Tour",
        venue_name="Grand Hall",
        event_starts_at=_timestamp("2026-05-01T20:00:00Z"),
        section="A",
        row="12",
        seat="7",
        ticket_type="VIP",
        image_url="https://img.example/band.png",
        attributes={"Door": "North"},
    )
    wallet = "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin"
    return [
        p.CalculateFeesRequest(venue_id="venue-nash", line_items=[line], currency="USD"),
        p.CalculateFeesRequest(
            venue_id="venue-nash",
            line_items=[line],
            currency="USD",
            jurisdiction_override=p.TaxJurisdiction(country_code="US", region_code="CA"),
            venue_tier_override=p.VENUE_TIER_PRO,
        ),
        p.CreatePaymentRequest(
            idempotency_key=key,
            order_id="order-1a2b3c",
            venue_id="venue-nash",
            event_id="event-1",
            buyer_id="buyer-1",
            line_items=[line],
            currency="USD",
            payment_method_id="pm_card_visa",
            buyer_contact=c.ContactInfo(name="Ada", email="ada@example.com"),
            event=p.EventDetails(event_name="The Band", venue_name="Ryman"),
            expected_total=usd,
            metadata={"campaign": "fall"},
        ),
        p.GetPaymentRequest(payment_id=key),
        p.ListPaymentsRequest(),
        p.ListPaymentsRequest(page_size=2, page_token="abc", statuses=[p.PAYMENT_STATUS_FAILED]),
        p.RefundPaymentRequest(idempotency_key=key, payment_id=key),
        p.RefundPaymentRequest(
            idempotency_key=key,
            payment_id=key,
            amount=usd,
            reason=p.REFUND_REASON_REQUESTED_BY_CUSTOMER,
        ),
        p.CancelPaymentRequest(idempotency_key=key, payment_id=key),
        p.HandleProviderWebhookRequest(
            webhook=c.ProviderWebhook(
                provider="stripe", payload=b"{}", headers={"stripe-signature": "t=1,v1=00"}
            )
        ),
        p.GetVenueBalanceRequest(venue_id="venue-nash", currency="USD"),
        p.RequestPayoutRequest(
            idempotency_key=key,
            venue_id="venue-nash",
            amount=usd,
            instant=True,
            statement_descriptor="TICKETTOKEN",
        ),
        p.ReconcilePaymentsRequest(idempotency_key=key),
        p.ReconcilePaymentsRequest(idempotency_key=key, payment_ids=[key], dry_run=True),
        n.MintTicketsRequest(
            idempotency_key=key,
            payment_id="pay-1a2b3c",
            order_id="order-pay-1a2b3c",
            event_id="event-1",
            venue_id="venue-1",
            buyer_id="buyer-1",
            tickets=[ticket],
            buyer_contact=c.ContactInfo(email="ada@example.com", phone="+16155550100"),
        ),
        n.MintTicketsRequest(
            idempotency_key=key,
            payment_id="pay-4d5e6f",
            order_id="order-pay-4d5e6f",
            event_id="event-1",
            venue_id="venue-1",
            buyer_id="buyer-1",
            tickets=[
                n.TicketToMint(
                    ticket_id="pay-4d5e6f-t0",
                    name="BAND A12-7",
                    event_name="The Band: Fall Tour",
                    venue_name="Grand Hall",
                    event_starts_at=_timestamp("2026-05-01T20:00:00Z"),
                    section="A",
                    row="12",
                    seat="7",
                    ticket_type="VIP",
                )
            ],
        ),
        n.GetMintJobRequest(job_id=key),
        n.GetMintJobRequest(payment_id="pay-1a2b3c"),
        n.GetTicketNftRequest(ticket_id="pay-1a2b3c-t0", verify_on_chain=True),
        n.GetTicketNftRequest(mint_address=wallet),
        n.GetTicketNftRequest(ticket_id="pay-1a2b3c-t0", verify_metadata=True),
        n.ListTicketNftsRequest(owner_wallet=wallet, page_size=2, page_token="abc"),
        n.ListTicketNftsRequest(payment_id="pay-1", statuses=[n.TICKET_NFT_STATUS_REVOKED]),
        n.TransferTicketRequest(
            idempotency_key=key,
            ticket_id="pay-1a2b3c-t0",
            to_wallet=wallet,
            reason=n.TRANSFER_REASON_RESALE,
            reference_id="resale-1",
        ),
        n.TransferTicketRequest(
            idempotency_key=key,
            ticket_id="pay-1a2b3c-t0",
            to_user_id="buyer-2",
            reason=n.TRANSFER_REASON_GIFT,
        ),
        n.RevokeTicketRequest(
            idempotency_key=key,
            ticket_id="pay-1a2b3c-t0",
            reason=n.REVOKE_REASON_REFUND,
            reference_id="refund-1",
        ),
        n.VerifyOwnershipRequest(ticket_id="pay-1a2b3c-t0", wallet=wallet),
        n.VerifyOwnershipRequest(ticket_id="pay-1a2b3c-t0", wallet=wallet, verify_metadata=True),
        n.GetMintingWalletRequest(),
        no.RenderTemplateRequest(template_id="bench", variables={"a": "b"}),
        no.SendNotificationRequest(
            idempotency_key=key,
            recipient=no.Recipient(email="ada@example.com", locale="en-US"),
            channel=no.CHANNEL_EMAIL,
            template_id="payment_receipt",
            dedup_key="payment:pay_123:receipt",
        ),
        no.UpsertTemplateRequest(
            idempotency_key=key,
            template=no.Template(
                id="payment_receipt",
                channel=no.CHANNEL_EMAIL,
                locale="en-US",
                category=no.NOTIFICATION_CATEGORY_TRANSACTIONAL,
                subject_template="Hi {{ name }}",
            ),
        ),
        no.SendNotificationRequest(
            idempotency_key=key,
            recipient=no.Recipient(
                user_id="buyer-1", email="ada@example.com", name="Ada", locale="en-US"
            ),
            channel=no.CHANNEL_EMAIL,
            template_id="ticket_confirmation",
            variables={
                "event_name": "The Band: Fall Tour",
                "venue_name": "Grand Hall",
                "event_starts_at": "Fri 1 May 2026, 20:00",
                "ticket_id": "pay-1-t0",
                "mint_address": wallet,
                "cluster": "devnet",
                "metadata_uri": "https://tkt.example/m/abc",
            },
            dedup_key="ticket:pay-1-t0:confirmation",
            metadata={"payment_id": "pay-1"},
        ),
        no.SendNotificationRequest(
            idempotency_key=key,
            recipient=no.Recipient(user_id="buyer-1", phone="+16155550100"),
            channel=no.CHANNEL_SMS,
            template_id="ticket_confirmation_sms",
            variables={"event_name": "The Band", "mint_address": wallet, "cluster": "devnet"},
            priority=no.NOTIFICATION_PRIORITY_HIGH,
        ),
        no.SendNotificationRequest(
            idempotency_key=key,
            recipient=no.Recipient(email="ada@example.com", time_zone="America/Chicago"),
            channel=no.CHANNEL_EMAIL,
            inline=no.InlineContent(subject="Hi {{ name }}", body_html="<p>{{ name }}</p>"),
            variables={"name": "Ada"},
            category=no.NOTIFICATION_CATEGORY_ACCOUNT,
            scheduled_at=_timestamp("2026-05-01T20:00:00Z"),
        ),
        no.UpsertTemplateRequest(
            idempotency_key=key,
            template=no.Template(
                id="event_reminder",
                channel=no.CHANNEL_EMAIL,
                locale="en-US",
                category=no.NOTIFICATION_CATEGORY_EVENT_UPDATES,
                subject_template="{{ event_name }} starts soon",
                body_html_template="<p>See you at {{ venue_name }}</p>",
                required_variables=["event_name", "venue_name"],
            ),
            expected_version=0,
        ),
        no.GetNotificationRequest(notification_id=key),
        no.ListNotificationsRequest(
            user_id="buyer-1",
            page_size=20,
            channel=no.CHANNEL_EMAIL,
            statuses=[no.NOTIFICATION_STATUS_SENT],
        ),
        no.GetTemplateRequest(template_id="ticket_confirmation", locale="es-MX"),
        no.RenderTemplateRequest(
            template_id="payment_failed",
            variables={"event_name": "E", "amount": "$1", "failure_message": "declined"},
        ),
        no.SetPreferencesRequest(
            idempotency_key=key,
            preferences=no.Preferences(
                user_id="buyer-1",
                channels=[no.ChannelPreference(channel=no.CHANNEL_SMS, enabled=False)],
                categories=[
                    no.CategoryPreference(category=no.NOTIFICATION_CATEGORY_MARKETING, enabled=True)
                ],
                quiet_hours=no.QuietHours(
                    enabled=True, start_minute=1320, end_minute=480, time_zone="America/Chicago"
                ),
            ),
        ),
        no.GetPreferencesRequest(user_id="buyer-1"),
        no.HandleProviderWebhookRequest(
            webhook=c.ProviderWebhook(
                provider="sendgrid",
                payload=b'[{"event":"delivered","sg_event_id":"e1"}]',
                headers={
                    "x-twilio-email-event-webhook-signature": "MEUCIQ==",
                    "x-twilio-email-event-webhook-timestamp": "1700000000",
                },
            )
        ),
        no.HandleProviderWebhookRequest(
            webhook=c.ProviderWebhook(
                provider="twilio",
                payload=b"MessageSid=SM1&MessageStatus=delivered",
                headers={"x-twilio-signature": "abc="},
                url="https://notify.example/webhooks/twilio/status?notification_id=n",
            )
        ),
        i.StartOAuthRequest(
            idempotency_key=key,
            venue_id="venue-nash",
            provider=i.PROVIDER_SQUARE,
            redirect_uri="https://admin.example/oauth/callback",
        ),
        i.ListSyncLogsRequest(page_size=1000, job_id=key),
        i.ListProvidersRequest(),
        i.CompleteOAuthRequest(
            idempotency_key=key,
            state="q3Jx0mZ6b0Zb8yqjv5Lx1e3T1r7oQm2b4hYk9cVw2sA",
            code="sq0cgp-authorization-code",
            extra_params={"realmId": "9341450000000001"},
        ),
        i.ConnectWithApiKeyRequest(
            idempotency_key=key,
            venue_id="venue-nash",
            provider=i.PROVIDER_STRIPE,
            api_key="rk_test_venue_catalogue_key",
            settings={"webhook_secret": "whsec_venue_endpoint"},
        ),
        i.GetConnectionRequest(connection_id=key),
        i.ListConnectionsRequest(
            page_size=50, venue_id="venue-nash", statuses=[i.CONNECTION_STATUS_CONNECTED]
        ),
        i.TestConnectionRequest(connection_id=key),
        i.DisconnectRequest(idempotency_key=key, connection_id=key, revoke_at_provider=True),
        i.HandleProviderWebhookRequest(
            webhook=c.ProviderWebhook(
                provider="square",
                payload=b'{"merchant_id":"M1","type":"customer.updated","event_id":"e1"}',
                headers={"x-square-hmacsha256-signature": "abc="},
                url="https://integration.example/webhooks/square",
                http_method="POST",
            )
        ),
        i.IngestCatalogRequest(
            idempotency_key=key,
            venue_id="venue-nash",
            events=[
                i.CatalogEvent(
                    event_id="evt-fall-tour",
                    name="The Band: Fall Tour",
                    description="Doors 7pm",
                    starts_at=_timestamp("2026-05-01T20:00:00Z"),
                    venue_name="Grand Hall",
                    ticket_types=[
                        i.CatalogTicketType(
                            ticket_type_id="ga", name="General Admission", price=usd
                        )
                    ],
                )
            ],
            complete=True,
        ),
        i.IngestInventoryRequest(
            idempotency_key=key,
            venue_id="venue-nash",
            levels=[i.InventoryLevel(ticket_type_id="ga", remaining=120)],
        ),
        i.RecordTransactionRequest(
            idempotency_key=key,
            kind=i.TRANSACTION_KIND_REFUND,
            payment_id="pay-1a2b3c",
            refund_id="ref-4d5e6f",
            venue_id="venue-nash",
            event_id="evt-fall-tour",
            buyer_contact=c.ContactInfo(name="Ada Lovelace", email="ada@example.com"),
            marketing_consent=True,
            lines=[
                i.TransactionLine(
                    ticket_type_id="ga", description="General Admission", unit_price=usd, quantity=1
                )
            ],
            amount=usd,
            occurred_at=_timestamp("2026-05-01T20:00:00Z"),
            provider_reference="re_3PqR",
        ),
        i.SetSyncScheduleRequest(
            idempotency_key=key,
            connection_id=key,
            entity_types=[i.ENTITY_TYPE_PRODUCT],
            direction=i.SYNC_DIRECTION_PUSH,
            interval_seconds=900,
            enabled=True,
        ),
        i.GetSyncScheduleRequest(connection_id=key),
        i.WatchSyncJobRequest(job_id=key, after_sequence=12),
    ]
