"""The JSON product-view API: request bodies to TrackProductViewRequest, and results to JSON."""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any

from google.type import money_pb2

from server.domain.errors import FieldViolation, ValidationFailed
from server.domain.money import DEFAULT_CURRENCY
from topmail.tracking.v1 import product_view_pb2, tracking_service_pb2

TEXT_FIELDS = (
    "email",
    "contact_id",
    "product_id",
    "product_name",
    "product_url",
    "variant_id",
    "image_url",
    "category",
    "brand",
    "sku",
    "session_id",
    "idempotency_key",
)
_NANOS_PER_UNIT = Decimal(1_000_000_000)
_INT64_MAX = 2**63 - 1
# gRPC field paths and the JSON fields they come from.
_JSON_FIELD_PATHS = {"price.units": "price", "price.nanos": "price", "price.currency_code": "currency"}


class InvalidJson(Exception):
    """The body is not a JSON object."""


def parse_body(body: bytes) -> dict[str, Any]:
    """Parse a JSON object, reading numbers as exact decimals; raise InvalidJson otherwise."""
    try:
        document = json.loads(
            body, parse_float=Decimal, parse_constant=_reject_constant, object_pairs_hook=_object_without_duplicates
        )
    except ValueError as error:
        if "int_max_str_digits" in str(error):
            raise InvalidJson("the body has a number with too many digits") from None
        raise InvalidJson(f"the body is not valid JSON: {error}") from None
    except RecursionError:
        raise InvalidJson("the body is nested too deeply") from None
    if not isinstance(document, dict):
        raise InvalidJson("the body must be a JSON object")
    return document


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number")


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for name, value in pairs:
        if name in document:
            raise ValueError(f"the field {name!r} appears twice")
        document[name] = value
    return document


def _is_text(value: str) -> bool:
    """Tell whether a JSON string is valid Unicode: JSON escapes can produce lone surrogates."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def track_request(document: dict[str, Any]) -> tracking_service_pb2.TrackProductViewRequest:
    """Build the gRPC request; raise ValidationFailed for unknown fields and wrong JSON types.

    Value rules (lengths, URLs, currencies) are the server's, so they are checked there.
    """
    violations: list[FieldViolation] = []
    request = tracking_service_pb2.TrackProductViewRequest()
    for name, value in document.items():
        if name in TEXT_FIELDS:
            if value is None:
                continue
            if not isinstance(value, str):
                violations.append(FieldViolation(name, "must be a string"))
                continue
            if not _is_text(value):
                violations.append(FieldViolation(name, "must be valid Unicode text without lone surrogates"))
                continue
            setattr(request, name, value)
        elif name not in ("price", "currency"):
            # ascii() keeps a lone surrogate in the name out of the UTF-8 error body.
            violations.append(
                FieldViolation(name if _is_text(name) else ascii(name), "is not a field of a product view")
            )
    currency = document.get("currency")
    if currency is not None and (not isinstance(currency, str) or not _is_text(currency)):
        violations.append(FieldViolation("currency", "must be a string such as USD"))
        currency = None
    price = document.get("price")
    if price is not None:
        money = _money(price, currency or DEFAULT_CURRENCY, violations)
        if money is not None:
            request.price.CopyFrom(money)
    elif currency is not None:
        violations.append(FieldViolation("currency", "is allowed only together with price"))
    if violations:
        raise ValidationFailed(violations)
    return request


def _money(price: Any, currency: str, violations: list[FieldViolation]) -> money_pb2.Money | None:
    if isinstance(price, bool) or not isinstance(price, int | Decimal):
        violations.append(FieldViolation("price", "must be a number such as 99.99"))
        return None
    try:
        amount = Decimal(price)
        nanos_total = amount * _NANOS_PER_UNIT
        if nanos_total != nanos_total.to_integral_value():
            violations.append(FieldViolation("price", "must have at most 9 decimal places"))
            return None
    except (InvalidOperation, ArithmeticError):
        violations.append(FieldViolation("price", "must be a finite number below 9223372036854775808"))
        return None
    units = int(amount)  # truncates toward zero, so units and nanos share the sign
    if abs(units) > _INT64_MAX:
        violations.append(FieldViolation("price", "must be below 9223372036854775808"))
        return None
    nanos = int(nanos_total - units * _NANOS_PER_UNIT)
    return money_pb2.Money(units=units, nanos=nanos, currency_code=currency)


def json_field_path(grpc_field_path: str) -> str:
    """Return the JSON field that a BadRequest field path of TrackProductView refers to."""
    return _JSON_FIELD_PATHS.get(grpc_field_path, grpc_field_path)


def view_document(view: product_view_pb2.ProductView) -> dict[str, Any]:
    """Return the success body, with `viewed_at` in RFC 3339 UTC with milliseconds."""
    viewed_at = view.viewed_at.ToDatetime()
    return {
        "data": {
            "id": view.id,
            "contact_id": view.contact_id,
            "product_id": view.product_id,
            "product_name": view.product_name,
            "viewed_at": viewed_at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{viewed_at.microsecond // 1000:03d}Z",
        }
    }
