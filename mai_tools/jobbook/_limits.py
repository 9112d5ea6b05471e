"""Spending limits: images per call, and images or money per UTC day, checked and reserved in
one atomic step of the job book, before anything is sent.

A call's intent (the row written before its submit, holding its principal and ``num_images``)
*is* its reservation: with daily limits, :meth:`JobBook.claim` writes it inside one transaction
that first takes the book's limit lock (SQLite: ``BEGIN IMMEDIATE``, the file's one write lock;
Postgres: ``pg_advisory_xact_lock`` on one key), then sums the day's images and refuses, rolling
the new row back, when the call would pass a limit. Two concurrent calls, or two replicas
sharing a Postgres book, therefore cannot both take the last slot.

How the day's images are counted (what the gateway charges, per its spec):

- A day is a UTC day: the counts start again at 00:00 UTC (``resets_at``).
- A job counts from the moment its intent is written, with its ``num_images``: while it is sent,
  runs, and after it ended COMPLETED or **FAILED** (the spec charges a failed job).
- A job that ended **ERROR** ("system error, not charged") gives its images back.
- A job whose state is **unknown** (its submit may have arrived, no request id was recorded)
  counts: it may be charged.
- An intent whose submit certainly created nothing (never sent, 429, another 4xx) is removed
  from the book, so it no longer counts.
- A call that continues an earlier job (the same ``idempotency_key``, or an identical call whose
  answer was never delivered) writes no intent: it reserves nothing and no daily limit refuses it.
- Per-principal limits count the principal's jobs on the same gateway through any front end
  sharing the book (MCP, CLI, batch, the client); the server limit counts every principal's.
- Money is images times ``price_per_image`` (the price now in force: a price changed during the day
  prices the day's earlier images too). Amounts are :class:`~decimal.Decimal` in ``currency``
  (``USD`` unless set), the currency of the operator's gateway wallet.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Protocol

from .._exceptions import ConfigurationError, SpendingLimitError
from ._record import JobRecord

DAY: Final = 86400.0
DEFAULT_CURRENCY: Final = "USD"
"""The currency of amounts when none is named (the gateway's wallet is in US dollars)."""
LOCK_KEY: Final = 0x6D61695F6C696D
"""The Postgres advisory-lock key every limited claim of a book takes (one key per database:
every gateway's and principal's claims queue on it, each for a few statements)."""

_CURRENCY = re.compile(r"[A-Z]{3}")
_NUMBER = re.compile(r"\d+(\.\d+)?")

Execute = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


class Book(Protocol):
    """What limits need of a :class:`~mai_tools.jobbook.JobBook` (named here, not imported:
    the book calls this module)."""

    clock: Callable[[], float]

    @property
    def limit_lock(self) -> str | None: ...

    @property
    def images_sql(self) -> str: ...

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def _transaction(self) -> AbstractContextManager[Execute]: ...


def _count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigurationError(f"{name} must be a whole number of images (0 or more).")
    text = str(value).strip()
    if not text.isdigit():
        raise ConfigurationError(
            f"{name} must be a whole number of images, 0 or more; got {str(value)[:40]!r}."
        )
    return int(text)


def parse_amount(value: object, name: str) -> Decimal:
    """An amount of money: a plain non-negative number (``0.04``), exact (a Decimal).

    Raises:
        ConfigurationError: negative, not a number, or with a currency sign or code (the
            currency is set once, by ``currency``).
    """
    if isinstance(value, bool) or not isinstance(value, Decimal | int | float | str):
        raise ConfigurationError(f"{name} must be an amount such as 0.04.")
    text = str(value).strip()
    if not _NUMBER.fullmatch(text):
        raise ConfigurationError(
            f"{name} must be a plain amount, 0 or more, such as 0.04 (in the currency set by "
            f"--currency / currency=, USD by default; no sign or code); got {text[:40]!r}."
        )
    try:
        return Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        raise ConfigurationError(f"{name} must be an amount such as 0.04.") from None


def parse_currency(value: object) -> str:
    text = str(value).strip().upper() if isinstance(value, str) else ""
    if not _CURRENCY.fullmatch(text):
        raise ConfigurationError(
            f"currency must be a three-letter ISO 4217 code such as USD or EUR; got "
            f"{str(value)[:40]!r}."
        )
    return text


@dataclass(frozen=True)
class SpendingLimits:
    """The limits an operator sets; every one optional (None: no limit).

    Give them to a client (``spending_limits=``); ``mai-image-mcp`` builds them from its
    ``--daily-images`` / ``--server-daily-images`` / ``--max-images-per-call`` /
    ``--price-per-image`` / ``--daily-spend`` / ``--currency`` settings.

    Attributes:
        daily_images: images per principal per UTC day.
        server_daily_images: images per UTC day for all principals together (per gateway,
            across every process sharing the job book).
        max_images_per_call: ``num_images`` one call may ask for.
        price_per_image: what one image costs, in ``currency`` (needed by ``daily_spend``).
        daily_spend: money per principal per UTC day (images times ``price_per_image``).
        currency: the ISO 4217 code of the amounts (``USD`` by default).

    Raises:
        ConfigurationError: a negative or non-numeric value, or ``daily_spend`` without
            ``price_per_image``.
    """

    daily_images: int | None = None
    server_daily_images: int | None = None
    max_images_per_call: int | None = None
    price_per_image: Decimal | None = None
    daily_spend: Decimal | None = None
    currency: str = DEFAULT_CURRENCY

    def __post_init__(self) -> None:
        for name in ("daily_images", "server_daily_images", "max_images_per_call"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _count(value, name))
        for name in ("price_per_image", "daily_spend"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, parse_amount(value, name))
        object.__setattr__(self, "currency", parse_currency(self.currency))
        if self.daily_spend is not None and self.price_per_image is None:
            raise ConfigurationError(
                "daily_spend needs price_per_image: give the price of one image (e.g. "
                "--price-per-image 0.04) so that a day's spending can be counted."
            )

    @property
    def daily(self) -> bool:
        """Whether a daily limit is set (the book must count and reserve)."""
        return (
            self.daily_images is not None
            or self.server_daily_images is not None
            or self.daily_spend is not None
        )

    @property
    def any(self) -> bool:
        """Whether any limit is set."""
        return self.daily or self.max_images_per_call is not None

    def money(self, amount: Decimal) -> str:
        """``amount`` as shown to people: ``0.16 USD``."""
        return f"{amount.normalize():f} {self.currency}"

    def cost(self, images: int) -> Decimal | None:
        """What ``images`` images cost, when a price is set."""
        return None if self.price_per_image is None else self.price_per_image * images


@dataclass(frozen=True)
class Usage:
    """Images counted today (see the module's rules)."""

    principal_images: int
    server_images: int


def day_start(t: float) -> float:
    """The start (epoch seconds) of the UTC day holding ``t``."""
    return t - (t % DAY)


def resets_at(t: float) -> datetime:
    """The next 00:00 UTC after ``t``."""
    return datetime.fromtimestamp(day_start(t) + DAY, UTC)


def images_of(fields: dict[str, Any]) -> int:
    """A row's ``num_images`` (1, the gateway's default, when its fields do not say)."""
    value = fields.get("num_images", 1)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1


# Column names and the backend's expression are constants; every value is a placeholder. A row's
# images are its num_images column; a row without it (older than the day before the book was
# migrated, or written by a process of schema 2 still running) is read from its fields, as every
# row was before (JobBook._migrate).
_USAGE: Final = (
    "SELECT COALESCE(SUM(n), 0), COALESCE(SUM(CASE WHEN principal = ? THEN n ELSE 0 END), 0) "
    "FROM (SELECT principal, COALESCE(num_images, {images}, 1) AS n FROM mai_jobs "
    "WHERE gateway = ? AND created >= ? {mine}"
    "AND (state <> 'finished' OR COALESCE(status, '') <> 'ERROR')) AS today"
)


def usage(
    execute: Execute,
    images_sql: str,
    limits: SpendingLimits,
    principal: str,
    gateway: str,
    t: float,
) -> Usage:
    """The day's counted images of ``principal`` and of everyone, on ``gateway``, summed by
    the database from each row's ``num_images`` column (``images_sql``: the backend's
    expression for the ``num_images`` of a row's fields, for a row without the column's)."""
    params: list[Any] = [principal, gateway, day_start(t)]
    mine = ""
    if limits.server_daily_images is None:  # only the principal's rows matter
        mine, params = "AND principal = ? ", [*params, principal]
    sql = _USAGE.format(images=images_sql, mine=mine)
    ((everyone, own),) = execute(sql, params)
    return Usage(int(own), int(everyone))


# ---------------------------------------------------------------------- deciding (pure)


def _when(at: datetime, t: float) -> str:
    left = max(int(at.timestamp() - t), 0)
    hours, minutes = divmod(left // 60, 60)
    return f"{at:%Y-%m-%d %H:%M} UTC (in {hours}h {minutes:02d}m)"


def per_call_refusal(limits: SpendingLimits, num_images: int) -> SpendingLimitError | None:
    """The refusal of a call asking for more images than one call may (None: within it)."""
    cap = limits.max_images_per_call
    if cap is None or num_images <= cap:
        return None
    return SpendingLimitError(
        f"Spending limit: one call may ask for at most {_images(cap)}, and this one asks for "
        f"{num_images} (num_images). Nothing was sent. Ask for {cap} or fewer; only the "
        "operator can raise this limit.",
        limit_name="max_images_per_call",
        limit=cap,
        used=0,
        remaining=cap,
        requested=num_images,
        resets_at=None,
    )


def _images(n: int) -> str:
    return f"{n} image" if n == 1 else f"{n} images"


def _images_refusal(
    name: str, whose: str, cap: int, used: int, num_images: int, t: float
) -> SpendingLimitError:
    left = max(cap - used, 0)
    at = resets_at(t)
    if left == 0:
        state = f"all {cap} are used today ({used} counted)"
        step = "No image can be made until the limit resets"
    else:
        state = f"{left} of the {cap} are left today ({used} used)"
        step = f"Ask for {left} or fewer, or wait until the limit resets"
    return SpendingLimitError(
        f"Spending limit: {whose} {_images(cap)} a day; {state}, and this call asks for "
        f"{_images(num_images)}. Nothing was sent. {step} at {_when(at, t)}; only the operator can "
        "raise the limit.",
        limit_name=name,
        limit=cap,
        used=used,
        remaining=left,
        requested=num_images,
        resets_at=at,
    )


def daily_refusal(
    limits: SpendingLimits, num_images: int, counted: Usage, t: float
) -> SpendingLimitError | None:
    """The refusal of a call that would pass a daily limit, given what is ``counted`` today
    (without the call), at time ``t`` (None: it fits every limit)."""
    cap = limits.daily_images
    if cap is not None and counted.principal_images + num_images > cap:
        return _images_refusal(
            "daily_images", "you may make", cap, counted.principal_images, num_images, t
        )
    cap = limits.server_daily_images
    if cap is not None and counted.server_images + num_images > cap:
        return _images_refusal(
            "server_daily_images",
            "this server makes (for all its users together) at most",
            cap,
            counted.server_images,
            num_images,
            t,
        )
    spend, price = limits.daily_spend, limits.price_per_image
    if spend is None or price is None:
        return None
    used, cost = price * counted.principal_images, price * num_images
    if used + cost <= spend:
        return None
    left = max(spend - used, Decimal(0))
    at = resets_at(t)
    fits = int(left // price) if price > 0 else num_images
    step = (
        f"Ask for {fits} image(s) or fewer, or wait until the limit resets"
        if fits > 0
        else "No image can be made until the limit resets"
    )
    return SpendingLimitError(
        f"Spending limit: you may spend {limits.money(spend)} a day on images; "
        f"{limits.money(left)} is left today ({limits.money(used)} used), and this call costs "
        f"{limits.money(cost)} ({num_images} image(s) at {limits.money(price)}). Nothing was "
        f"sent. {step} at {_when(at, t)}; only the operator can raise the limit.",
        limit_name="daily_spend",
        limit=spend,
        used=used,
        remaining=left,
        requested=cost,
        resets_at=at,
        currency=limits.currency,
    )


# ---------------------------------------------------------------------- in the book


def check(
    book: Book, limits: SpendingLimits, principal: str, gateway: str, num_images: int
) -> None:
    """Whether a call of ``num_images`` fits now, without reserving anything (a pre-check,
    e.g. before asking the user to confirm); the claim checks again, atomically.

    Raises:
        SpendingLimitError: it does not fit.
        JobBookError: the book cannot be read.
    """
    refused = per_call_refusal(limits, num_images)
    if refused is None and limits.daily:
        t = book.clock()
        counted = usage(book._execute, book.images_sql, limits, principal, gateway, t)
        refused = daily_refusal(limits, num_images, counted, t)
    if refused is not None:
        raise refused


def insert_within_limits(
    book: Book, insert: str, values: Sequence[Any], record: JobRecord, limits: SpendingLimits
) -> bool:
    """Insert a new intent (``insert``: the book's ``INSERT … ON CONFLICT DO NOTHING``) if the
    day's images leave room for it, as one transaction under the book's limit lock.

    Returns False when the row was not inserted because one of its keys is taken (the caller
    then finds the earlier job: adopting reserves nothing and is never refused).

    Raises:
        SpendingLimitError: the call would pass a daily limit; nothing was written.
    """
    with book._transaction() as execute:
        if book.limit_lock is not None:
            execute(book.limit_lock, (LOCK_KEY,))
        if not execute(insert, values):
            return False
        counted = usage(
            execute, book.images_sql, limits, record.principal, record.gateway, record.created
        )
        n = images_of(record.fields)
        before = Usage(counted.principal_images - n, counted.server_images - n)
        refused = daily_refusal(limits, n, before, record.created)
        if refused is not None:
            raise refused  # the transaction is rolled back: the new intent is gone
    return True
