"""A run's budget: ``max_images`` and, with a price per image, ``max_spend`` (pure: no I/O).

Both count the images requested by this input, earlier runs included, as ``--max-images``
always did: a line is taken only when its images still fit, so the run stops submitting at the
first line that would pass either budget, and says which. Money is exact
(:class:`~decimal.Decimal`), in ``currency`` (USD unless set).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from .._config import require_whole
from .._exceptions import ConfigurationError, InvalidArgumentError
from ..jobbook._limits import DEFAULT_CURRENCY, parse_amount, parse_currency


@dataclass(frozen=True)
class Budget:
    """What a run may request: images, and money at ``price`` per image."""

    max_images: int | None = None
    price: Decimal | None = None
    max_spend: Decimal | None = None
    currency: str = DEFAULT_CURRENCY

    @classmethod
    def of(
        cls,
        max_images: int | None = None,
        price_per_image: Decimal | str | None = None,
        max_spend: Decimal | str | None = None,
        currency: str = DEFAULT_CURRENCY,
    ) -> Budget:
        """The budget of these options.

        Raises:
            InvalidArgumentError: a negative or non-numeric value, or ``max_spend`` without
                ``price_per_image``.
        """
        images = None
        if max_images is not None:
            images = require_whole(max_images, "max_images", minimum=0, error=InvalidArgumentError)
        try:
            price = (
                None
                if price_per_image is None
                else parse_amount(price_per_image, "price_per_image")
            )
            spend = None if max_spend is None else parse_amount(max_spend, "max_spend")
            code = parse_currency(currency)
        except ConfigurationError as exc:
            raise InvalidArgumentError(str(exc)) from None
        if spend is not None and price is None:
            raise InvalidArgumentError(
                "max_spend (--max-spend) needs price_per_image (--price-per-image): the price "
                "of one image, e.g. 0.04, turns the amount into images."
            )
        return cls(images, price, spend, code)

    def money(self, amount: Decimal) -> str:
        return f"{amount.normalize():f} {self.currency}"

    def hold(self, requested: int, images: int) -> str | None:
        """Why a line of ``images`` images is held back when ``requested`` images were asked
        for so far (None: it fits)."""
        if self.max_images is not None and requested + images > self.max_images:
            return (
                f"--max-images {self.max_images} reached ({requested} images requested so "
                "far, this input's earlier runs included)"
            )
        if self.max_spend is None or self.price is None:
            return None
        if self.price * (requested + images) <= self.max_spend:
            return None
        return (
            f"--max-spend {self.money(self.max_spend)} reached ({requested} images requested "
            f"so far at {self.money(self.price)} each: {self.money(self.price * requested)}, "
            f"this input's earlier runs included; the next line's {images} would pass it)"
        )

    def spent(self, requested: int) -> str | None:
        """The summary's estimate of what the images requested cost (None without a price)."""
        if self.price is None:
            return None
        line = (
            f"{self.money(self.price * requested)} for {requested} images requested at "
            f"{self.money(self.price)} each (earlier runs included)"
        )
        if self.max_spend is not None:
            line += f" of --max-spend {self.money(self.max_spend)}"
        return line
