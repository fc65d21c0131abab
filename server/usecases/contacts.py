"""Creating and looking up contacts, and resolving the contact a tracking request names."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence

from server.domain.contacts import Contact, ContactReference, check_email
from server.domain.errors import ContactMismatch, ContactNotFound, TrackingError
from server.domain.validation import Violations, check_uuid
from server.usecases.ports import Clock, ContactLookup, ContactStore


class ContactDirectory:
    """Contact use cases of one service instance, scoped per call to a workspace."""

    def __init__(self, contacts: ContactStore, clock: Clock) -> None:
        self._contacts = contacts
        self._clock = clock

    def create_contact(self, workspace_id: uuid.UUID, email: str) -> Contact:
        violations = Violations()
        address = check_email(violations, "email", email, required=True)
        violations.raise_if_any()
        assert address is not None

        return self._contacts.add_contact(workspace_id, address, self._clock())

    def get_contact(self, workspace_id: uuid.UUID, *, contact_id: str = "", email: str = "") -> Contact:
        """Look a contact up by exactly one of id or e-mail address."""
        violations = Violations()
        if contact_id and email:
            violations.add("contact_id", "give either contact_id or email, not both")
        elif not contact_id and not email:
            violations.add("contact_id", "is required when email is empty")
            violations.add("email", "is required when contact_id is empty")
        parsed_id = check_uuid(violations, "contact_id", contact_id) if contact_id else None
        address = check_email(violations, "email", email) if email else None
        violations.raise_if_any()

        return self.resolve(workspace_id, ContactReference(contact_id=parsed_id, email=address))

    def resolve(self, workspace_id: uuid.UUID, reference: ContactReference) -> Contact:
        """Return the contact a request names; raise ContactNotFound or ContactMismatch."""
        by_id = None
        if reference.contact_id is not None:
            by_id = self._contacts.find_contact_by_id(workspace_id, reference.contact_id)
            if by_id is None:
                raise ContactNotFound("contact_id")
        by_email = None
        if reference.email is not None:
            by_email = self._contacts.find_contact_by_email(workspace_id, reference.email.lookup_key)
        return match_contact(reference, by_id, by_email)


def match_contact(reference: ContactReference, by_id: Contact | None, by_email: Contact | None) -> Contact:
    """Return the contact that both parts of a reference name; raise ContactNotFound or ContactMismatch."""
    if reference.contact_id is not None and by_id is None:
        raise ContactNotFound("contact_id")
    if reference.email is None:
        assert by_id is not None
        return by_id
    if by_email is None:
        raise ContactNotFound("email")
    if by_id is not None and by_id.id != by_email.id:
        raise ContactMismatch(str(by_id.id))
    return by_email


def resolve_contacts(
    lookup: ContactLookup, references: Sequence[tuple[uuid.UUID, ContactReference]]
) -> list[Contact | TrackingError]:
    """Resolve (workspace id, reference) pairs with two queries per workspace; each failure stays in its place."""
    ids: dict[uuid.UUID, set[uuid.UUID]] = defaultdict(set)
    lookup_keys: dict[uuid.UUID, set[str]] = defaultdict(set)
    for workspace_id, reference in references:
        if reference.contact_id is not None:
            ids[workspace_id].add(reference.contact_id)
        if reference.email is not None:
            lookup_keys[workspace_id].add(reference.email.lookup_key)
    found_by_id = {
        workspace_id: lookup.contacts_by_id(workspace_id, requested) for workspace_id, requested in ids.items()
    }
    found_by_key = {
        workspace_id: lookup.contacts_by_lookup_key(workspace_id, requested)
        for workspace_id, requested in lookup_keys.items()
    }

    contacts: list[Contact | TrackingError] = []
    for workspace_id, reference in references:
        by_id = None
        if reference.contact_id is not None:
            by_id = found_by_id[workspace_id].get(reference.contact_id)
        by_email = None
        if reference.email is not None:
            by_email = found_by_key[workspace_id].get(reference.email.lookup_key)
        try:
            contacts.append(match_contact(reference, by_id, by_email))
        except TrackingError as error:
            contacts.append(error)
    return contacts
