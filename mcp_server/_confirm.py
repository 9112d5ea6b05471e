"""Confirmation for costly calls: the user says yes before a large job is sent.

With ``--confirm-above N`` a ``generate_image`` / ``edit_image`` call of more than N images
asks the user first, with a form elicitation holding one boolean ``confirm`` field (the
message says how many images, the prompt, and the estimated cost when a price per image is
known). Only a ticked, accepted form sends the job; a decline, a cancel, or an accepted form
left unticked sends nothing and says so.

The steps before anything is sent, in order (:meth:`Confirmation.before_submit`):

1. for a call that needs a confirmation, the hard spending limits (``precheck``, wired by the
   limits code: it refuses a call the limits would refuse, so the user is never asked to
   confirm a call that cannot run; any other call's limits are checked by the job book's
   claim, atomically, as it reserves);
2. this confirmation;
3. then the submit (a waiting call or an MCP task, ``_service``).

**Both protocol eras go through the SDK's own elicitation machinery** (``Resolve`` /
``Elicit``, ``mcp.server.mcpserver.resolve.resolve_arguments``), run from the server's one
``tools/call`` interceptor (``_tasks.ImageTasks``) so that waiting calls and tasks are asked
alike:

- up to 2025-11-25 (an ``initialize`` handshake) the question is a standalone
  ``elicitation/create`` request sent mid-call on the session's back channel;
- from 2026-07-28 the SDK has no back channel (``NoBackChannelError``): the call answers
  ``resultType: "input_required"`` with the question, and the client sends the same call again
  with the user's answer (``inputResponses``) and the sealed ``requestState`` that proves the
  question was asked, for these very arguments (the SDK's ``RequestStateBoundary`` binds it to
  the tool, the arguments' digest and the caller).

**A client that cannot be asked is never sent a question**: one that did not declare the form
elicitation capability (in its ``initialize`` on a handshake connection, in each request's
capabilities on 2026-07-28), or a handshake connection with no channel for a server request
(stateless HTTP). The operator decides what such a call does (``--if-unconfirmable``):
``refuse`` (the default) or ``proceed``.

A refused call is an ``isError`` result that says plainly what happened, that nothing was
sent, and what to do instead: the tools declare an output schema, and a result that is not an
error must carry ``structuredContent`` valid against it (a job's ``request_id``), which a call
that made no job cannot; clients check it (the SDK client raises). The wording tells the model
not to repeat the call, so the error does not invite a retry loop.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import (
    AcceptedElicitation,
    Context,
    Elicit,
    ElicitationResult,
    RequestStateSecurity,
    Resolve,
)
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import build_resolver_plans, resolve_arguments
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolRequestParams, CallToolResult, InputRequiredResult, TextContent
from mcp_types.version import is_version_at_least
from pydantic import BaseModel, Field

from ._arguments import EditArguments, GenerateArguments
from ._identity import principal
from ._settings import Settings

logger = logging.getLogger("mcp_server")

Unconfirmable = Literal["refuse", "proceed"]
"""What a call that needs a confirmation does when the client cannot be asked."""

ImageArguments = GenerateArguments | EditArguments
Precheck = Callable[
    [ServerRequestContext[Any, Any], str, ImageArguments], Awaitable[CallToolResult | None]
]
"""The hard limits' check before confirming: a refusal (an ``isError`` result), or None to go
on. It must not reserve anything: the reservation happens at the submit, which the user may
still decline here; and on 2026-07-28 it runs again on the call that brings the user's answer
(the limits may have changed while the user thought about it)."""

INPUT_REQUIRED_VERSION = "2026-07-28"
"""The first protocol revision that asks through ``input_required`` results (as the SDK's
``resolve._INPUT_REQUIRED_VERSION``)."""

PROMPT_SHOWN = 120
"""At most this many characters of the prompt go into the question."""


class Confirm(BaseModel):
    """Send this image job? It is charged once sent."""

    confirm: bool = Field(
        default=False,
        title="Send the job",
        description="Tick to make the images (the job is charged); leave it unticked, decline "
        "or cancel to send nothing.",
    )


async def confirm_costly_call(question: str) -> Elicit[Confirm]:
    """The SDK resolver that asks ``question`` (its name is the question's key on the wire)."""
    return Elicit(question, Confirm)


_RESOLVED = {"answer": (Resolve(confirm_costly_call), True)}
_PLANS = build_resolver_plans(_RESOLVED, {"question"})


@dataclass(frozen=True)
class ConfirmPolicy:
    """Which calls need the user's yes, and what to do when the user cannot be asked.

    Attributes:
        above_images: a call of more than this many images asks (None: never by count).
        unconfirmable: ``refuse`` or ``proceed`` a call that needs asking when the client
            cannot be asked.
        price_per_image: the price of one image, when the operator set one: the question
            shows the estimated cost, and ``above_cost`` applies.
        currency: the price's currency, as shown in the question.
        above_cost: a call whose estimated cost is more than this asks (needs a price).
    """

    above_images: int | None = None
    unconfirmable: Unconfirmable = "refuse"
    price_per_image: Decimal | None = None
    currency: str = ""
    above_cost: Decimal | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ConfirmPolicy:
        """The policy the server's settings give (the price and currency are the spending
        limits' ``--price-per-image`` and ``--currency``)."""
        return cls(
            above_images=settings.confirm_above,
            unconfirmable=settings.if_unconfirmable,
            price_per_image=settings.price_per_image,
            currency=settings.currency,
            above_cost=settings.confirm_above_cost,
        )

    def cost(self, num_images: int) -> Decimal | None:
        """The estimated cost of ``num_images`` images, when a price is known."""
        return None if self.price_per_image is None else self.price_per_image * num_images

    def needs_confirmation(self, num_images: int) -> bool:
        if self.above_images is not None and num_images > self.above_images:
            return True
        cost = self.cost(num_images)
        return cost is not None and self.above_cost is not None and cost > self.above_cost

    def question(self, tool: str, args: ImageArguments) -> str:
        """The message the user sees: how many images, the prompt (short), the cost if known.

        The same arguments give the same text: on 2026-07-28 the user's answer counts only for
        the exact question that was asked.
        """
        count = args.num_images
        what = "edited image" if tool == "edit_image" else "image"
        prompt = " ".join(args.prompt.split())
        if len(prompt) > PROMPT_SHOWN:
            prompt = prompt[: PROMPT_SHOWN - 1].rstrip() + "…"
        lines = [f"Make {count} {what}{'s' if count != 1 else ''} for the prompt “{prompt}”?"]
        cost = self.cost(count)
        if cost is not None:
            lines.append(f"Estimated cost: {_money(cost, self.currency)}.")
        lines.append("The job is charged once sent. Tick confirm and accept to send it.")
        return "\n".join(lines)


def request_state_security(settings: Settings) -> RequestStateSecurity:
    """How the SDK seals a 2026-07-28 confirmation's state (``requestState``).

    Under the operator's shared key (``MAI_MCP_REQUEST_STATE_KEY``) the call that brings the
    answer may land on any replica, and survive a restart; without one, under a key only this
    process holds (what the SDK does by default). The SDK binds the state to the tool, its
    arguments and this server's name, for 10 minutes; here also to the caller's principal
    (``_identity.principal``, the one every job is kept under), so one principal's "yes"
    cannot stand for another's call.
    """
    key = settings.request_state_key
    secret = key.get_secret_value() if key is not None else os.urandom(32)
    return RequestStateSecurity(keys=[secret], bind_principal=principal)


def _money(amount: Decimal, currency: str) -> str:
    text = f"{amount:f}"
    return f"{text} {currency}".strip()


def can_ask(ctx: ServerRequestContext[Any, Any]) -> bool:
    """Whether this request's client can be sent a form elicitation.

    It must have declared the capability (a bare ``elicitation: {}`` means form, as the SDK
    reads it; url-only does not); on a handshake connection the session must also have a
    channel to send a server request on (not stateless HTTP).
    """
    capabilities = ctx.session.client_capabilities
    elicitation = capabilities.elicitation if capabilities is not None else None
    if elicitation is None or (elicitation.form is None and elicitation.url is not None):
        return False
    if uses_input_required(ctx.protocol_version):
        return True
    return bool(ctx.session.can_send_request)


def uses_input_required(protocol_version: str | None) -> bool:
    return protocol_version is not None and is_version_at_least(
        protocol_version, INPUT_REQUIRED_VERSION
    )


def _refusal(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


def _images(count: int) -> str:
    return f"{count} image{'s' if count != 1 else ''}"


class Confirmation:
    """The steps before a job is sent: the limits' precheck, then the user's confirmation.

    Args:
        policy: which calls need a confirmation (see :class:`ConfirmPolicy`).
        precheck: the hard spending limits' check, run before a question (see
            :data:`Precheck`).
    """

    def __init__(self, policy: ConfirmPolicy, precheck: Precheck | None = None) -> None:
        self.policy = policy
        self.precheck = precheck

    async def before_submit(
        self,
        ctx: ServerRequestContext[Any, Any],
        params: CallToolRequestParams,
        tool: str,
        args: ImageArguments,
    ) -> CallToolResult | InputRequiredResult | None:
        """None when the call may be sent; else what to answer instead: a refusal, or (from
        2026-07-28) the question for the client to put to the user."""
        count = args.num_images
        if not self.policy.needs_confirmation(count):
            return None  # the job book's claim checks the limits, atomically, as it reserves
        if self.precheck is not None:  # nobody is asked to confirm a call that will be refused
            refused = await self.precheck(ctx, tool, args)
            if refused is not None:
                return refused
        if not can_ask(ctx):
            return self.unconfirmable(tool, count)
        question = self.policy.question(tool, args)
        context: Context[Any, Any] = Context(request_context=ctx, input_params=params)
        try:
            resolved = await resolve_arguments(_RESOLVED, _PLANS, {"question": question}, context)
        except (MCPError, ToolError, ValueError) as exc:
            # The client declared the capability but answered with an error or a malformed
            # form: nobody said yes.
            logger.info("%s: the confirmation failed (%s); nothing sent", tool, exc)
            return _refusal(
                f"Not sent: this call of {_images(count)} needs the user's confirmation, and "
                "asking the user failed. No job was made and nothing was charged. Tell the "
                "user; do not repeat the call unless they ask for it."
            )
        if isinstance(resolved, InputRequiredResult):
            return resolved
        answer: ElicitationResult[Confirm] = resolved["answer"]
        if isinstance(answer, AcceptedElicitation) and answer.data.confirm:
            logger.info("%s: the user confirmed %s", tool, _images(count))
            return None
        how = "left confirm unticked" if answer.action == "accept" else f"chose {answer.action}"
        logger.info("%s: the user %s for %s; nothing sent", tool, how, _images(count))
        return _refusal(
            f"Not sent: the user did not confirm making {_images(count)} (they {how}). No job "
            "was made and nothing was charged. Do not repeat this call: ask the user what they "
            "want instead."
        )

    def unconfirmable(self, tool: str, count: int) -> CallToolResult | None:
        """The operator's choice for a call of ``count`` images that needs a confirmation its
        client cannot give: None to proceed, or the refusal (naming the rule that asked)."""
        if self.policy.unconfirmable == "proceed":
            logger.info(
                "%s: %s needs a confirmation, but the client cannot be asked: proceeding "
                "(--if-unconfirmable proceed)",
                tool,
                _images(count),
            )
            return None
        logger.info("%s: %s needs a confirmation the client cannot give; refused", tool, count)
        above = self.policy.above_images
        step = "Do not repeat this call:"
        if above is None or count <= above:  # asked because of the estimated cost
            limit = _money(self.policy.above_cost or Decimal(0), self.policy.currency)
            rule = f"calls estimated to cost more than {limit}"
        elif above == 0:
            rule = "every image job"
        else:
            rule = f"calls of more than {_images(above)}"
            step = f"To go on, call again with num_images at most {above}. For more,"
        return _refusal(
            f"Not sent: this server asks the user to confirm {rule}, and this client cannot ask "
            "the user (it did not declare the elicitation capability, or its connection cannot "
            "carry a question). No job was made and nothing was charged. "
            f"{step} the user needs a client that can confirm, or the server's operator can "
            "set --if-unconfirmable proceed."
        )
