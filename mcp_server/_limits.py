"""The server's side of the spending limits (:mod:`mai_tools.jobbook._limits` holds the rules):
the settings' amount and currency types, the pre-check a step before the submit can make, and
the audit record of a refused call.

The limits themselves are enforced by the server's client: its job-book claim reserves a
call's images atomically, and a refusal comes back as a
:class:`~mai_tools.SpendingLimitError` answered like any other failure (``isError``).
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Protocol

import anyio
from pydantic import BeforeValidator, ValidationInfo

from mai_tools._agent import Failed, Outcome
from mai_tools._exceptions import ConfigurationError, JobBookError, SpendingLimitError
from mai_tools._tools import TOOL_SPECS
from mai_tools.jobbook import JobScope, SpendingLimits
from mai_tools.jobbook._limits import check, parse_amount, parse_currency, per_call_refusal

if TYPE_CHECKING:
    from mai_tools import AsyncMAIImageClient
    from mai_tools.jobbook import AuditLog, JobBook

    from ._arguments import EditArguments, GenerateArguments


def _amount(value: object, info: ValidationInfo) -> object:
    if value is None:
        return None
    try:
        return parse_amount(value, info.field_name or "amount")
    except ConfigurationError as exc:
        raise ValueError(str(exc)) from None


def _currency(value: object) -> str:
    try:
        return parse_currency(value)
    except ConfigurationError as exc:
        raise ValueError(str(exc)) from None


logger = logging.getLogger("mcp_server")

NEEDS_PRICE = (
    "needs --price-per-image (MAI_MCP_PRICE_PER_IMAGE): give the price of one image, e.g. "
    "0.04, so that an amount of money can be counted in images."
)

Amount = Annotated[Decimal | None, BeforeValidator(_amount)]
"""A settings amount: a plain non-negative number, exact (no sign or currency code)."""
Currency = Annotated[str, BeforeValidator(_currency)]
"""A settings currency: an ISO 4217 code, upper case."""


class _LimitSettings(Protocol):
    """The settings' limit fields (the Settings model imports this module)."""

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


async def refusal(
    client: AsyncMAIImageClient | None, book: JobBook | None, scope: JobScope, num_images: int
) -> SpendingLimitError | None:
    """Why a call of ``num_images`` images would be refused now (None: it fits), without
    reserving anything. A book that cannot be read is logged and passes: the claim decides
    (and sends nothing without its intent)."""
    limits = client.spending_limits if client is not None else None
    if limits is None or client is None:
        return None
    if book is None:
        return per_call_refusal(limits, num_images)
    gateway = client.base_url

    def run() -> None:
        check(book, limits, scope.principal, gateway, num_images)

    try:
        if book.offload:  # a network book: off the event loop
            await anyio.to_thread.run_sync(run)
        else:
            run()
    except SpendingLimitError as exc:
        return exc
    except JobBookError as exc:
        logger.warning("job book: could not check the spending limits: %s", exc)
    return None


def audit_refusal(
    audit: AuditLog | None,
    scope: JobScope,
    tool: str,
    args: GenerateArguments | EditArguments,
    outcome: Outcome,
) -> None:
    """Write a call a spending limit refused into the audit log (if there is one)."""
    if audit is None or not isinstance(outcome, Failed):
        return
    error = outcome.error
    if isinstance(error, SpendingLimitError):
        audit.refused(
            principal=scope.principal,
            surface=scope.surface,
            tool=tool,
            num_images=args.num_images,
            reason=f"{error.limit_name}: {error}",
            operation=TOOL_SPECS[tool].operation,
            prompt=args.prompt,
        )
