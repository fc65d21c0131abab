"""Prices as exact decimals with an ISO 4217 currency code."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import pycountry

from server.domain.validation import Violations, shown

DEFAULT_CURRENCY = "USD"
NANOS_PER_UNIT = 1_000_000_000

# ISO 4217 lists these codes, but they name no money: XXX is "no currency" and XTS is
# reserved for testing.
_NON_MONEY_CODES = frozenset({"XXX", "XTS"})
_ACTIVE_CURRENCY_CODES = frozenset(
    currency.alpha_3 for currency in pycountry.currencies if currency.alpha_3 not in _NON_MONEY_CODES
)


@dataclass(frozen=True, slots=True)
class Price:
    """A non-negative amount with at most 9 decimal places and an upper-case currency code."""

    amount: Decimal
    currency_code: str

    @property
    def units(self) -> int:
        return int(self.amount)

    @property
    def nanos(self) -> int:
        return int((self.amount - int(self.amount)) * NANOS_PER_UNIT)


def is_active_currency(code: str) -> bool:
    return code in _ACTIVE_CURRENCY_CODES


def check_currency_code(violations: Violations, field: str, value: str) -> str | None:
    """Return the code in upper case (USD when empty), or None after adding a violation."""
    if not value:
        return DEFAULT_CURRENCY
    # The ASCII check comes first, because upper() maps some non-ASCII letters to ASCII (U+0131 to "I").
    if len(value) != 3 or not value.isascii() or not value.isalpha():
        violations.add(field, f"must be a 3-letter ISO 4217 currency code such as USD, got {shown(value)}")
        return None
    code = value.upper()
    if not is_active_currency(code):
        violations.add(field, f"must be an active ISO 4217 currency code, got {shown(value)}")
        return None
    return code


def check_money(violations: Violations, field: str, *, units: int, nanos: int, currency_code: str) -> Price | None:
    """Validate the parts of a `google.type.Money` and return the exact price.

    Units and nanos must not be negative, nanos must be below one unit, and the currency
    must be an active ISO 4217 code.
    """
    valid = True
    if units < 0 or (units == 0 and nanos < 0):
        violations.add(f"{field}.units", "price must not be negative")
        valid = False
    elif nanos < 0:
        violations.add(f"{field}.nanos", "must have the same sign as units, as google.type.Money requires")
        valid = False
    elif nanos >= NANOS_PER_UNIT:
        violations.add(f"{field}.nanos", f"must be below {NANOS_PER_UNIT}, got {nanos}")
        valid = False
    code = check_currency_code(violations, f"{field}.currency_code", currency_code)
    if not valid or code is None:
        return None
    amount = Decimal(units) + Decimal(nanos).scaleb(-9)
    return Price(amount=normalize_amount(amount), currency_code=code)


def normalize_amount(amount: Decimal) -> Decimal:
    """Drop trailing fractional zeros, keeping whole amounts whole (100, not 1E+2)."""
    if amount == amount.to_integral_value():
        return amount.quantize(Decimal(1))
    return amount.normalize()


def format_amount(amount: Decimal) -> str:
    """Return the amount as plain decimal text, never in exponent notation (0.000000001, not 1E-9)."""
    return format(normalize_amount(amount), "f")
