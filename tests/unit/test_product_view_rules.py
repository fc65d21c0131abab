"""Validation rules of product views, prices, e-mail addresses and API keys, without I/O."""

from __future__ import annotations

import dataclasses
import uuid
from decimal import Decimal

import pytest

from server.domain.api_keys import ApiKeyMode, generate_api_key, hash_api_key, is_well_formed, key_prefix
from server.domain.contacts import check_email, mask_email
from server.domain.errors import ValidationFailed
from server.domain.money import check_money, normalize_amount
from server.domain.product_views import (
    MoneyInput,
    ProductView,
    ProductViewInput,
    fingerprint_product_view,
    validate_product_view,
)
from server.domain.validation import Violations, check_http_url

VALID = ProductViewInput(
    email="shopper@example.com",
    product_id="prod_abc123",
    product_name="Premium Wireless Headphones",
    product_url="https://shop.example.com/products/wireless-headphones",
    price=MoneyInput(units=99, nanos=990_000_000, currency_code="usd"),
)


def violated_fields(request: ProductViewInput) -> list[str]:
    with pytest.raises(ValidationFailed) as caught:
        validate_product_view(request)
    return [violation.field for violation in caught.value.violations]


def test_valid_request_keeps_values() -> None:
    valid = validate_product_view(VALID)

    assert valid.product.product_id == "prod_abc123"
    assert valid.product.price is not None
    assert valid.product.price.amount == Decimal("99.99")
    assert valid.product.price.currency_code == "USD"
    assert valid.contact.email is not None
    assert valid.contact.email.lookup_key == "shopper@example.com"


def test_price_parts_round_trip() -> None:
    violations = Violations()

    price = check_money(violations, "price", units=99, nanos=990_000_000, currency_code="EUR")

    assert price is not None
    assert (price.units, price.nanos) == (99, 990_000_000)
    assert str(price.amount) == "99.99"


def test_largest_price_round_trips() -> None:
    violations = Violations()

    price = check_money(violations, "price", units=2**63 - 1, nanos=999_999_999, currency_code="USD")

    assert price is not None
    assert (price.units, price.nanos) == (2**63 - 1, 999_999_999)


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (Decimal("100.000000000"), "100"),
        (Decimal("0E-9"), "0"),
        (Decimal("99.990000000"), "99.99"),
        (Decimal("1E+2"), "100"),
    ],
)
def test_amount_normalized_without_exponent(amount: Decimal, text: str) -> None:
    assert str(normalize_amount(amount)) == text


def test_control_characters_rejected() -> None:
    fields = violated_fields(
        ProductViewInput(
            email="shopper@example.com",
            product_id="p\x07",
            product_name="Head\nphones",
            product_url="https://shop.example.com/p",
        )
    )

    assert fields == ["product_id", "product_name"]


@pytest.mark.parametrize(
    "url",
    [
        "https://shop.example.com",
        "http://127.0.0.1:8080/x",
        "https://shop.example.com/Übersicht.pdf",
        "HTTPS://SHOP.EXAMPLE.COM/",
    ],
)
def test_absolute_http_urls_accepted(url: str) -> None:
    violations = Violations()

    assert check_http_url(violations, "product_url", url) == url
    assert not violations


def test_fingerprint_depends_on_content_and_contact() -> None:
    product = validate_product_view(VALID).product
    other_product = validate_product_view(dataclasses.replace(VALID, sku="SKU-2")).product
    contact = uuid.uuid4()

    assert fingerprint_product_view(contact, product) == fingerprint_product_view(contact, product)
    assert fingerprint_product_view(contact, product) != fingerprint_product_view(contact, other_product)
    assert fingerprint_product_view(contact, product) != fingerprint_product_view(uuid.uuid4(), product)


def test_email_domain_normalized_local_part_kept() -> None:
    violations = Violations()

    address = check_email(violations, "email", "Jane.Doe@EXAMPLE.com")

    assert address is not None
    assert address.address == "Jane.Doe@example.com"
    assert address.lookup_key == "jane.doe@example.com"


def test_international_domain_accepted() -> None:
    violations = Violations()

    address = check_email(violations, "email", "kunde@münchen.de")

    assert address is not None
    assert address.address == "kunde@münchen.de"


def test_masked_email_hides_local_part() -> None:
    assert mask_email("shopper@example.com") == "s***@example.com"
    assert mask_email("not-an-address") == "***"


@pytest.mark.parametrize("mode", list(ApiKeyMode))
def test_generated_keys_are_well_formed(mode: ApiKeyMode) -> None:
    key = generate_api_key(mode)

    assert key.startswith(f"tm_{mode.value}_")
    assert len(key) >= len("tm_live_") + 32
    assert is_well_formed(key)
    assert key_prefix(key) == key[:12]
    assert len(hash_api_key(key)) == 64
    assert hash_api_key(key) != hash_api_key(generate_api_key(mode))


@pytest.mark.parametrize(
    "key",
    [
        "tm_live_" + "a" * 31,
        "tm_prod_" + "a" * 40,
        "sk_live_" + "a" * 40,
        "tm_live_" + "a" * 31 + "!",
        "",
        "tm_live_" + "a" * 201,
    ],
)
def test_malformed_keys_rejected(key: str) -> None:
    assert not is_well_formed(key)


@pytest.mark.parametrize(
    "contact_id",
    [
        "{3f2b8c1e-9d4a-4c7b-8e2f-1a2b3c4d5e6f}",
        "3f2b8c1e9d4a4c7b8e2f1a2b3c4d5e6f",
        "3f-2b8c1e-9d4a-4c7b-8e2f1a2b3c4d5e6f",
        "٣f2b8c1e-9d4a-4c7b-8e2f-1a2b3c4d5e6f",
    ],
)
def test_non_canonical_contact_id_rejected(contact_id: str) -> None:
    assert violated_fields(dataclasses.replace(VALID, email="", contact_id=contact_id)) == ["contact_id"]


@pytest.mark.parametrize("currency_code", ["\u0131nr", "u\u017fd", "\u20acUR"])
def test_non_ascii_currency_rejected(currency_code: str) -> None:
    request = dataclasses.replace(VALID, price=MoneyInput(units=1, nanos=0, currency_code=currency_code))

    assert violated_fields(request) == ["price.currency_code"]


def test_nanos_sign_mismatch_names_nanos() -> None:
    request = dataclasses.replace(VALID, price=MoneyInput(units=1, nanos=-1, currency_code="USD"))

    assert violated_fields(request) == ["price.nanos"]


def test_long_currency_code_is_not_echoed_whole() -> None:
    request = dataclasses.replace(VALID, price=MoneyInput(units=1, nanos=0, currency_code="U" * 100_000))

    with pytest.raises(ValidationFailed) as caught:
        validate_product_view(request)

    assert len(caught.value.violations[0].description) < 200


@pytest.mark.parametrize(
    "url",
    [
        "https://%00/",
        "https://xn--/x",
        "https://-bad-.example.com/",
        "https://evil.example\\@shop.example.com/",
        "https://exa mple.com/",
    ],
)
def test_invalid_url_hosts_rejected(url: str) -> None:
    violations = Violations()

    assert check_http_url(violations, "product_url", url) is None
    assert violations


@pytest.mark.parametrize("name", ["\u200b", " \u2060 ", "x\ufffe", "x\u0378", "x\ud800"])
def test_invisible_or_unassigned_text_rejected(name: str) -> None:
    assert violated_fields(dataclasses.replace(VALID, product_name=name)) == ["product_name"]


def test_blank_optional_field_rejected() -> None:
    assert violated_fields(dataclasses.replace(VALID, category="   ")) == ["category"]


def test_tiny_price_in_trigger_has_no_exponent() -> None:
    from datetime import UTC, datetime

    from server.domain.flow_triggers import product_viewed_trigger

    product = validate_product_view(
        dataclasses.replace(VALID, price=MoneyInput(units=0, nanos=1, currency_code="USD"))
    ).product
    view = ProductView(
        id=uuid.uuid4(),
        workspace_id=uuid.uuid4(),
        contact_id=uuid.uuid4(),
        product=product,
        viewed_at=datetime.now(UTC),
        idempotency_key=None,
        request_fingerprint="",
    )

    assert product_viewed_trigger(view).payload["price"] == "0.000000001"
