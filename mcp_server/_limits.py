"""The server's side of the spending limits (:mod:`mai_tools.jobbook._limits` holds the rules,
:mod:`._limit_values` the settings' values): the pre-check before the submit (the
confirmation's precheck), and the audit record of a refused call.

The limits themselves are enforced by the server's client: its job-book claim reserves a
call's images atomically, and a refusal comes back as a
:class:`~mai_tools.SpendingLimitError` answered like any other failure (``isError``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio
from mcp.types import CallToolResult

from mai_tools._agent import Failed, Outcome, outcome_of
from mai_tools._exceptions import JobBookError, SpendingLimitError
from mai_tools._tools import TOOL_SPECS
from mai_tools.jobbook import JobScope
from mai_tools.jobbook._limits import check, per_call_refusal

from ._answers import answer

if TYPE_CHECKING:
    from mai_tools import AsyncMAIImageClient
    from mai_tools.jobbook import AuditLog, JobBook

    from ._arguments import EditArguments, GenerateArguments
    from ._settings import Settings
    from ._state import ServerState


logger = logging.getLogger("mcp_server")


async def check_limits(
    settings: Settings,
    state: ServerState,
    scope: JobScope,
    tool: str,
    args: GenerateArguments | EditArguments,
) -> CallToolResult | None:
    """The refusal (``isError``, audited) of a call a spending limit would refuse now, or
    None. Reserves nothing (the claim checks again, atomically): the confirmation's
    precheck, so nobody is asked to confirm a call that will be refused."""
    refused = await refusal(state.client, state.book, scope, args.num_images)
    if refused is None:
        return None
    failed = outcome_of(refused)
    audit_refusal(state.audit, scope, tool, args, failed)
    return await answer(failed, settings)


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
