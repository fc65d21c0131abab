"""Translation between protobuf messages and domain objects; protobuf stops here."""

from __future__ import annotations

from google.protobuf import timestamp_pb2
from google.type import money_pb2

from server.domain.classification import BotType, Confidence, EmailEventType
from server.domain.contacts import Contact
from server.domain.email_events import EmailEvent, EmailEventInput, TimestampInput
from server.domain.engagement import EmailEventListInput, EngagementCounts, EngagementFigures, engagement_figures
from server.domain.errors import FieldViolation, ValidationFailed
from server.domain.instrumentation import InstrumentedHtml
from server.domain.money import Price
from server.domain.product_views import MoneyInput, ProductView, ProductViewInput, ProductViewListInput
from server.domain.tracking_links import TrackingKind
from server.usecases.email_events import RecordedEmailEvent
from server.usecases.tracking_links import InstrumentInput, TrackingHitInput
from topmail.tracking.v1 import contact_pb2, email_event_pb2, product_view_pb2, tracking_service_pb2


def _timestamp(value: object) -> timestamp_pb2.Timestamp:
    timestamp = timestamp_pb2.Timestamp()
    timestamp.FromDatetime(value)  # type: ignore[arg-type]
    return timestamp


def contact_message(contact: Contact) -> contact_pb2.Contact:
    return contact_pb2.Contact(id=str(contact.id), email=contact.email, create_time=_timestamp(contact.created_at))


def product_view_input(request: tracking_service_pb2.TrackProductViewRequest) -> ProductViewInput:
    price = None
    if request.HasField("price"):
        price = MoneyInput(
            units=request.price.units, nanos=request.price.nanos, currency_code=request.price.currency_code
        )
    return ProductViewInput(
        email=request.email,
        contact_id=request.contact_id,
        product_id=request.product_id,
        product_name=request.product_name,
        product_url=request.product_url,
        variant_id=request.variant_id,
        image_url=request.image_url,
        price=price,
        category=request.category,
        brand=request.brand,
        sku=request.sku,
        session_id=request.session_id,
        idempotency_key=request.idempotency_key,
    )


def money_message(price: Price) -> money_pb2.Money:
    return money_pb2.Money(currency_code=price.currency_code, units=price.units, nanos=price.nanos)


def product_view_message(view: ProductView) -> product_view_pb2.ProductView:
    product = view.product
    message = product_view_pb2.ProductView(
        id=str(view.id),
        contact_id=str(view.contact_id),
        product_id=product.product_id,
        product_name=product.product_name,
        product_url=product.product_url,
        variant_id=product.variant_id or "",
        image_url=product.image_url or "",
        category=product.category or "",
        brand=product.brand or "",
        sku=product.sku or "",
        session_id=product.session_id or "",
        viewed_at=_timestamp(view.viewed_at),
        idempotency_key=view.idempotency_key or "",
    )
    if product.price is not None:
        message.price.CopyFrom(money_message(product.price))
    return message


_EVENT_TYPES = {
    email_event_pb2.EMAIL_EVENT_TYPE_DELIVERED: EmailEventType.DELIVERED,
    email_event_pb2.EMAIL_EVENT_TYPE_OPENED: EmailEventType.OPENED,
    email_event_pb2.EMAIL_EVENT_TYPE_CLICKED: EmailEventType.CLICKED,
}
_EVENT_TYPE_NUMBERS = {event_type: number for number, event_type in _EVENT_TYPES.items()}
_BOT_TYPE_NUMBERS = {bot_type: email_event_pb2.BotType.Value(f"BOT_TYPE_{bot_type.name}") for bot_type in BotType}
_CONFIDENCE_NUMBERS = {
    confidence: email_event_pb2.BotConfidence.Value(f"BOT_CONFIDENCE_{confidence.name}") for confidence in Confidence
}


def _timestamp_input(message: timestamp_pb2.Timestamp) -> TimestampInput:
    return TimestampInput(seconds=message.seconds, nanos=message.nanos)


def email_event_input(request: tracking_service_pb2.RecordEmailEventRequest) -> EmailEventInput:
    return EmailEventInput(
        event_type=_EVENT_TYPES.get(request.event_type),
        message_id=request.message_id,
        email=request.email,
        contact_id=request.contact_id,
        campaign_id=request.campaign_id,
        occurred_at=_timestamp_input(request.occurred_at) if request.HasField("occurred_at") else None,
        client_ip=request.client_ip,
        user_agent=request.user_agent,
        http_method=request.http_method,
        request_headers=dict(request.request_headers),
        link_url=request.link_url,
        link_id=request.link_id,
        honeypot_link=request.honeypot_link,
        delivered_at=_timestamp_input(request.delivered_at) if request.HasField("delivered_at") else None,
        idempotency_key=request.idempotency_key,
    )


def record_email_event_response(recorded: RecordedEmailEvent) -> tracking_service_pb2.RecordEmailEventResponse:
    return tracking_service_pb2.RecordEmailEventResponse(
        email_event=email_event_message(recorded.event),
        created_events=[email_event_message(event) for event in recorded.created],
        reclassified_events=[email_event_message(event) for event in recorded.reclassified],
    )


def email_event_list_input(request: tracking_service_pb2.ListEmailEventsRequest) -> EmailEventListInput:
    if request.event_type and request.event_type not in _EVENT_TYPES:
        raise ValidationFailed([FieldViolation("event_type", f"is not a known event type: {request.event_type}")])
    return EmailEventListInput(
        message_id=request.message_id,
        campaign_id=request.campaign_id,
        contact_id=request.contact_id,
        event_type=_EVENT_TYPES.get(request.event_type),
        start_time=_timestamp_input(request.start_time) if request.HasField("start_time") else None,
        end_time=_timestamp_input(request.end_time) if request.HasField("end_time") else None,
        is_bot=request.is_bot if request.HasField("is_bot") else None,
        page_size=request.page_size,
        page_token=request.page_token,
    )


def email_event_message(event: EmailEvent) -> email_event_pb2.EmailEvent:
    verdict = event.verdict
    return email_event_pb2.EmailEvent(
        id=str(event.id),
        contact_id=str(event.contact_id),
        message_id=event.message_id,
        campaign_id=event.campaign_id or "",
        event_type=_EVENT_TYPE_NUMBERS[event.event_type],
        occurred_at=_timestamp(event.occurred_at),
        client_ip=event.client_ip or "",
        user_agent=event.user_agent,
        http_method=event.http_method or "",
        link_url=event.link_url or "",
        link_id=event.link_id or "",
        honeypot_link=event.honeypot_link,
        is_bot=verdict.is_bot,
        bot_type=_BOT_TYPE_NUMBERS[verdict.bot_type] if verdict.bot_type else email_event_pb2.BOT_TYPE_UNSPECIFIED,
        bot_confidence=(
            _CONFIDENCE_NUMBERS[verdict.confidence]
            if verdict.confidence
            else email_event_pb2.BOT_CONFIDENCE_UNSPECIFIED
        ),
        bot_signals=list(verdict.signals),
        metadata=email_event_pb2.EmailEventMetadata(
            inferred=event.inferred,
            inferred_from_event_id=str(event.inferred_from_event_id) if event.inferred_from_event_id else "",
        ),
        classifier_version=verdict.classifier_version,
        idempotency_key=event.idempotency_key or "",
        record_time=_timestamp(event.recorded_at),
    )


def _figures_message(figures: EngagementFigures) -> email_event_pb2.EngagementFigures:
    return email_event_pb2.EngagementFigures(
        delivered=figures.delivered,
        opens=figures.opens,
        unique_opens=figures.unique_opens,
        clicks=figures.clicks,
        unique_clicks=figures.unique_clicks,
        open_rate=figures.open_rate,
        click_rate=figures.click_rate,
        click_to_open_rate=figures.click_to_open_rate,
    )


def engagement_stats_response(
    counts: EngagementCounts, *, include_bots: bool
) -> tracking_service_pb2.GetEngagementStatsResponse:
    response = tracking_service_pb2.GetEngagementStatsResponse(
        human=_figures_message(engagement_figures(counts.human)),
        apple_mpp_opens=counts.apple_mpp_opens.events,
        apple_mpp_unique_opens=counts.apple_mpp_opens.messages,
    )
    if include_bots:
        response.with_bots.CopyFrom(_figures_message(engagement_figures(counts.everyone)))
        for bot_type in sorted(counts.by_bot_type, key=lambda item: _BOT_TYPE_NUMBERS[item]):
            opens, clicks = counts.by_bot_type[bot_type]
            response.bot_breakdown.add(bot_type=_BOT_TYPE_NUMBERS[bot_type], opens=opens, clicks=clicks)
    return response


_HIT_KINDS = {
    tracking_service_pb2.TRACKING_HIT_KIND_OPEN: TrackingKind.OPEN,
    tracking_service_pb2.TRACKING_HIT_KIND_CLICK: TrackingKind.CLICK,
    tracking_service_pb2.TRACKING_HIT_KIND_HONEYPOT: TrackingKind.HONEYPOT,
}


def instrument_input(request: tracking_service_pb2.InstrumentEmailRequest) -> InstrumentInput:
    return InstrumentInput(
        email=request.email,
        contact_id=request.contact_id,
        message_id=request.message_id,
        campaign_id=request.campaign_id,
        html=request.html,
    )


def instrument_response(instrumented: InstrumentedHtml) -> tracking_service_pb2.InstrumentEmailResponse:
    return tracking_service_pb2.InstrumentEmailResponse(
        html=instrumented.html,
        links=[
            tracking_service_pb2.InstrumentedLink(link_id=link.link_id, destination=link.destination)
            for link in instrumented.links
        ],
        rejected_links=[
            tracking_service_pb2.RejectedLink(href=link.href, reason=link.reason)
            for link in instrumented.rejected_links
        ],
    )


def tracking_hit_input(hit: tracking_service_pb2.TrackingHit) -> TrackingHitInput:
    return TrackingHitInput(
        token=hit.token,
        kind=_HIT_KINDS.get(hit.kind),
        occurred_at=_timestamp_input(hit.occurred_at) if hit.HasField("occurred_at") else None,
        client_ip=hit.client_ip,
        user_agent=hit.user_agent,
        http_method=hit.http_method,
        request_headers=dict(hit.request_headers),
        idempotency_key=hit.idempotency_key,
    )


def product_view_list_input(request: tracking_service_pb2.ListProductViewsRequest) -> ProductViewListInput:
    return ProductViewListInput(
        email=request.email,
        contact_id=request.contact_id,
        distinct_products=request.distinct_products,
        start_time=_timestamp_input(request.start_time) if request.HasField("start_time") else None,
        end_time=_timestamp_input(request.end_time) if request.HasField("end_time") else None,
        page_size=request.page_size,
        page_token=request.page_token,
    )
