"""The spending limits' setting values (:mod:`mai_tools.jobbook._limits` holds the rules): the
amount and currency types the :class:`~mcp_server.Settings` fields use, and the
:class:`~mai_tools.SpendingLimits` the settings give. Imported by the settings: nothing here
imports the server."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Protocol

from pydantic import BeforeValidator, Field, ValidationInfo

from mai_tools._exceptions import ConfigurationError
from mai_tools.jobbook import SpendingLimits
from mai_tools.jobbook._limits import DEFAULT_CURRENCY, parse_amount, parse_currency

__all__ = [
    "DEFAULT_CURRENCY",
    "Amount",
    "ConfirmAboveCost",
    "Currency",
    "CurrencyCode",
    "DailyImages",
    "DailySpend",
    "MaxImagesPerCall",
    "PricePerImage",
    "PricedAmount",
    "ServerDailyImages",
    "limits_of",
]

NEEDS_PRICE = (
    "needs --price-per-image (MAI_MCP_PRICE_PER_IMAGE): give the price of one image, e.g. "
    "0.04, so that an amount of money can be counted in images."
)


def _amount(value: object, info: ValidationInfo) -> object:
    if value is None:
        return None
    try:
        return parse_amount(value, info.field_name or "amount")
    except ConfigurationError as exc:
        raise ValueError(str(exc)) from None


def _priced(value: object, info: ValidationInfo) -> object:
    # Fields are validated in order: price_per_image (declared before) is in info.data if given.
    if value is not None and info.data.get("price_per_image") is None:
        raise ValueError(NEEDS_PRICE)
    return _amount(value, info)


def _currency(value: object) -> str:
    try:
        return parse_currency(value)
    except ConfigurationError as exc:
        raise ValueError(str(exc)) from None


Amount = Annotated[Decimal | None, BeforeValidator(_amount)]
"""A settings amount: a plain non-negative number, exact (no sign or currency code)."""
PricedAmount = Annotated[Decimal | None, BeforeValidator(_priced)]
"""An amount of money that is counted in images: it needs ``price_per_image`` (declared
before it) to be set."""
Currency = Annotated[str, BeforeValidator(_currency)]
"""A settings currency: an ISO 4217 code, upper case."""


# The settings' fields, each a type that carries its check and its --help text (the Settings
# model names them with their flags; defaults: None, the currency USD).
DailyImages = Annotated[
    int | None, Field(ge=0, description="Images each principal may make per UTC day.")
]
ServerDailyImages = Annotated[
    int | None, Field(ge=0, description="Images all principals together may make per UTC day.")
]
MaxImagesPerCall = Annotated[
    int | None, Field(ge=0, description="Most images (num_images) one call may ask for.")
]
PricePerImage = Annotated[
    Amount, Field(description="What one image costs, in --currency (e.g. 0.04).")
]
DailySpend = Annotated[
    PricedAmount, Field(description="Money each principal may spend per UTC day (needs a price).")
]
ConfirmAboveCost = Annotated[
    PricedAmount, Field(description="Ask the user to confirm a call estimated above this cost.")
]
CurrencyCode = Annotated[
    Currency, Field(description="ISO 4217 code of the amounts (your gateway wallet's).")
]


class _LimitSettings(Protocol):
    """The settings' limit fields."""

    @property
    def daily_images(self) -> int | None: ...
    @property
    def server_daily_images(self) -> int | None: ...
    @property
    def max_images_per_call(self) -> int | None: ...
    @property
    def price_per_image(self) -> Decimal | None: ...
    @property
    def daily_spend(self) -> Decimal | None: ...
    @property
    def currency(self) -> str: ...


def limits_of(settings: _LimitSettings) -> SpendingLimits | None:
    """The limits the server's settings set (None: none)."""
    limits = SpendingLimits(
        daily_images=settings.daily_images,
        server_daily_images=settings.server_daily_images,
        max_images_per_call=settings.max_images_per_call,
        price_per_image=settings.price_per_image,
        daily_spend=settings.daily_spend,
        currency=settings.currency,
    )
    return limits if limits.any else None
