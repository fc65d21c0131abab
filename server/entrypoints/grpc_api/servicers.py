"""gRPC servicers. Their methods run after authentication, on worker threads unless they are coroutines."""

from __future__ import annotations

import uuid

from google.rpc import code_pb2, status_pb2

from server.domain.errors import TrackingError
from server.domain.product_views import ProductView
from server.entrypoints.error_table import mapping_for
from server.entrypoints.grpc_api.statuses import error_status_message
from server.entrypoints.grpc_api.translate import (
    contact_message,
    email_event_input,
    email_event_list_input,
    email_event_message,
    engagement_stats_response,
    instrument_input,
    instrument_response,
    product_view_input,
    product_view_list_input,
    product_view_message,
    record_email_event_response,
    tracking_hit_input,
)
from server.usecases.contacts import ContactDirectory
from server.usecases.email_events import EmailEventRecorder, PendingEmailEvent, RecordedEmailEvent
from server.usecases.group_commit import GroupCommit
from server.usecases.product_views import PendingProductView, ProductViewTracker
from server.usecases.tracking_links import TrackingLinks
from topmail.tracking.v1 import contact_service_pb2, tracking_service_pb2


class ContactServicer:
    """Implements `topmail.tracking.v1.ContactService`."""

    def __init__(self, contacts: ContactDirectory) -> None:
        self._contacts = contacts

    def CreateContact(
        self, workspace_id: uuid.UUID, request: contact_service_pb2.CreateContactRequest
    ) -> contact_service_pb2.CreateContactResponse:
        contact = self._contacts.create_contact(workspace_id, request.email)
        return contact_service_pb2.CreateContactResponse(contact=contact_message(contact))

    def GetContact(
        self, workspace_id: uuid.UUID, request: contact_service_pb2.GetContactRequest
    ) -> contact_service_pb2.GetContactResponse:
        contact = self._contacts.get_contact(workspace_id, contact_id=request.contact_id, email=request.email)
        return contact_service_pb2.GetContactResponse(contact=contact_message(contact))


class TrackingServicer:
    """Implements `topmail.tracking.v1.TrackingService`.

    TrackProductView and RecordEmailEvent are coroutines: they validate on the event loop and
    hand the request to a group commit, which responds once the request's batch has committed.
    """

    def __init__(
        self,
        product_views: ProductViewTracker,
        email_events: EmailEventRecorder,
        tracking_links: TrackingLinks,
        product_view_commits: GroupCommit[PendingProductView, ProductView],
        email_event_commits: GroupCommit[PendingEmailEvent, RecordedEmailEvent],
    ) -> None:
        self._product_views = product_views
        self._email_events = email_events
        self._tracking_links = tracking_links
        self._product_view_commits = product_view_commits
        self._email_event_commits = email_event_commits

    async def TrackProductView(
        self, workspace_id: uuid.UUID, request: tracking_service_pb2.TrackProductViewRequest
    ) -> tracking_service_pb2.TrackProductViewResponse:
        pending = self._product_views.prepare(workspace_id, product_view_input(request))
        view = await self._product_view_commits.submit(pending)
        return tracking_service_pb2.TrackProductViewResponse(product_view=product_view_message(view))

    def ListProductViews(
        self, workspace_id: uuid.UUID, request: tracking_service_pb2.ListProductViewsRequest
    ) -> tracking_service_pb2.ListProductViewsResponse:
        page = self._product_views.list_views(workspace_id, product_view_list_input(request))
        return tracking_service_pb2.ListProductViewsResponse(
            product_views=[product_view_message(view) for view in page.views], next_page_token=page.next_page_token
        )

    async def RecordEmailEvent(
        self, workspace_id: uuid.UUID, request: tracking_service_pb2.RecordEmailEventRequest
    ) -> tracking_service_pb2.RecordEmailEventResponse:
        pending = self._email_events.prepare(workspace_id, email_event_input(request))
        recorded = await self._email_event_commits.submit(pending)
        return record_email_event_response(recorded)

    def RecordEmailEvents(
        self, workspace_id: uuid.UUID, request: tracking_service_pb2.RecordEmailEventsRequest
    ) -> tracking_service_pb2.RecordEmailEventsResponse:
        inputs = [email_event_input(element) for element in request.requests]
        outcomes = self._email_events.record_many(workspace_id, inputs)

        response = tracking_service_pb2.RecordEmailEventsResponse()
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                response.results.add(status=_failure_status(outcome))
            else:
                response.results.add(
                    status=status_pb2.Status(code=code_pb2.OK), response=record_email_event_response(outcome)
                )
        return response

    def ListEmailEvents(
        self, workspace_id: uuid.UUID, request: tracking_service_pb2.ListEmailEventsRequest
    ) -> tracking_service_pb2.ListEmailEventsResponse:
        page = self._email_events.list_events(workspace_id, email_event_list_input(request))
        return tracking_service_pb2.ListEmailEventsResponse(
            email_events=[email_event_message(event) for event in page.events],
            next_page_token=page.next_page_token,
        )

    def GetEngagementStats(
        self, workspace_id: uuid.UUID, request: tracking_service_pb2.GetEngagementStatsRequest
    ) -> tracking_service_pb2.GetEngagementStatsResponse:
        counts = self._email_events.count_engagement(
            workspace_id, message_id=request.message_id, campaign_id=request.campaign_id
        )
        return engagement_stats_response(counts, include_bots=request.include_bots)

    def InstrumentEmail(
        self, workspace_id: uuid.UUID, request: tracking_service_pb2.InstrumentEmailRequest
    ) -> tracking_service_pb2.InstrumentEmailResponse:
        instrumented = self._tracking_links.instrument(workspace_id, instrument_input(request))
        return instrument_response(instrumented)

    def RecordTrackingHits(
        self, caller_id: uuid.UUID, request: tracking_service_pb2.RecordTrackingHitsRequest
    ) -> tracking_service_pb2.RecordTrackingHitsResponse:
        """Record the gateway's hits; `caller_id` is the gateway, each hit's token names its workspace."""
        outcomes = self._tracking_links.record_hits([tracking_hit_input(hit) for hit in request.hits])
        response = tracking_service_pb2.RecordTrackingHitsResponse()
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                response.results.add(status=_failure_status(outcome))
            else:
                response.results.add(status=status_pb2.Status(code=code_pb2.OK), email_event_id=str(outcome.event.id))
        return response


def _failure_status(error: Exception) -> status_pb2.Status:
    """Build the status of one failed element of a batch.

    An error outside the TrackingError hierarchy is a bug. The use case logged it with its ids
    where it caught it, so the caller gets only a generic INTERNAL message.
    """
    if isinstance(error, TrackingError):
        return error_status_message(error, mapping_for(error))
    return status_pb2.Status(code=code_pb2.INTERNAL, message="internal error; the server logged it")
