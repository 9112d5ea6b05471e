"""Who is calling: the principal of a request, and whether it may see every principal's jobs.

The HTTP auth layer (``_auth``) authenticates a request with the MCP SDK's pieces: Starlette's
``AuthenticationMiddleware`` puts an ``AuthenticatedUser`` in ``scope["user"]`` whose access
token names the principal in ``claims["mai_principal"]`` (a named token's name, the single
``--auth-token``'s ``"default"``, or an OAuth token's principal claim). Everything else is the
one local user: a stdio server serves whoever started it, and a loopback server without auth
anyone on the machine.

Jobs are the principal's own: the job book stores the principal with each job, and every
tool that reads, lists, adopts or previews a job looks only at the caller's (another
principal's job is answered exactly like an unknown one). An operator (``--operator NAME``)
sees and reads every principal's jobs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser

from mai_tools.jobbook import LOCAL_PRINCIPAL

from ._settings import Settings

PRINCIPAL_CLAIM: Final = "mai_principal"
"""The access token claim (set by the server's own token verifiers) naming the principal."""
DEFAULT_PRINCIPAL: Final = "default"
"""The principal of the single shared ``--auth-token``."""


def _user(request_context: object) -> AuthenticatedUser | None:
    request = getattr(request_context, "request", None)
    return _scope_user(getattr(request, "scope", None))


def _scope_user(scope: object) -> AuthenticatedUser | None:
    if not isinstance(scope, dict):
        return None
    user = scope.get("user")
    return user if isinstance(user, AuthenticatedUser) else None


def principal(request_context: object = None) -> str:
    """Whose jobs a request makes, adopts and lists: the authenticated principal of an HTTP
    request, else the local user (``"local"``).

    Raises:
        PermissionError: an authenticated request whose token names no principal (the
            verifiers never produce one; this guards against a verifier plugged in by hand).
    """
    return _principal_of(_user(request_context))


def scope_principal(scope: object) -> str:
    """:func:`principal` of an HTTP request's ASGI ``scope`` (for middleware: ``/metrics``).

    Raises:
        PermissionError: as :func:`principal`.
    """
    return _principal_of(_scope_user(scope))


def _principal_of(user: AuthenticatedUser | None) -> str:
    if user is None:
        return LOCAL_PRINCIPAL
    claims = user.access_token.claims or {}
    name = claims.get(PRINCIPAL_CLAIM)
    if not isinstance(name, str) or not name:
        raise PermissionError("the access token names no principal")
    return name


def is_operator(request_context: object, operators: Iterable[str]) -> bool:
    """True if the caller may see every principal's jobs (a principal named by
    ``--operator``)."""
    return principal(request_context) in set(operators)


def visible_principal(request_context: object, operators: Iterable[str]) -> str | None:
    """Whose jobs the caller may look up in the book: its own principal, or None (every
    principal's) for an operator."""
    return None if is_operator(request_context, operators) else principal(request_context)


def many_principals(settings: Settings) -> bool:
    """True if callers can be different principals (named tokens or OAuth are configured).

    Then a request id the book does not hold for the caller is answered as unknown without
    asking the gateway: the gateway knows no principals, and every job this server made is in
    its book. With one principal (stdio, the local loopback server, the single
    ``--auth-token``) a job made elsewhere (``mai-image``, another book) is read from the
    gateway as before.
    """
    return settings.tokens_file is not None or settings.oauth_issuer is not None
