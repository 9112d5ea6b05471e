"""Server settings: one pydantic-settings model, one field per setting.

A field marked with :class:`Option` is public configuration: pydantic-settings reads it from its
environment variable (``MAI_MCP_`` and the field's name, or the field's alias: ``PIXAZO_API_KEY``),
and ``mai-image-mcp`` turns it into a command-line flag (``__main__`` builds the click options
from these fields: the flag, its help from the field's description, its choices, its variable).
A flag overrides the variable. Values are checked once, by the model; a bad one is a
:class:`SettingsError` naming the variable or flag it came from, never quoting a secret.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from mai_tools._constants import API_KEY_ENV, BASE_URL_ENV
from mai_tools._exceptions import ConfigurationError
from mai_tools._images import allowed_directory
from mai_tools._webhooks import check_public_url
from mai_tools.jobbook import ENV as JOB_BOOK_ENV

from . import _limit_values as lv
from ._values import ENV_AUTH_TOKEN as ENV_AUTH_TOKEN
from ._values import ENV_PREFIX as ENV_PREFIX
from ._values import MIN_TOKEN_LENGTH as MIN_TOKEN_LENGTH
from ._values import TOKEN_HOWTO as TOKEN_HOWTO
from ._values import MetricsSwitch, _items, check_allowed_host, check_allowed_origin
from ._values import check_auth_token as check_auth_token
from ._values import read_token_file as read_token_file

PreviewMode = Literal["preview", "thumbnail", "off"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LOG_LEVELS: tuple[LogLevel, ...] = typing.get_args(LogLevel)


MIN_STATE_KEY_LENGTH = 32
"""The MCP SDK's floor for a request-state key (bytes of secret randomness)."""

DEFAULT_MAX_WAIT = 45.0
"""Under the ~60 s tool timeout many MCP clients use."""

PREVIEW_SIZES: dict[str, int] = {"preview": 384, "thumbnail": 160}

DEFAULT_MAX_SESSIONS = 500
"""Open HTTP sessions at once (each holds some 45 KB: about 22 MB at the cap)."""
DEFAULT_SESSION_IDLE_TIMEOUT = 60.0
"""An HTTP session with no request in flight and no open GET stream for this long is closed:
a flood of sessions opened and never closed fills the cap for a minute at most."""

DEFAULT_MAX_CONNECTIONS = 400
"""Open HTTP connections at once: well under the usual 1,024 file descriptors of a process."""
DEFAULT_REQUEST_READ_TIMEOUT = 60.0
"""A request's headers and body must arrive within it (a 32 MiB body needs ~4.5 Mbit/s)."""

_Items = Annotated[tuple[str, ...], NoDecode]  # a variable's text is split by the field's validator


class SettingsError(ValueError):
    """A server setting has an invalid value.

    Attributes:
        problems: (field, what is wrong) for each bad value; the message names each field by
            where its value came from.
    """

    def __init__(self, message: str, problems: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems


@dataclass(frozen=True)
class Option:
    """Marks a :class:`Settings` field as public configuration (read from its variable).

    Attributes:
        flag: its command-line flag, or None for a variable only.
        off: the flag that sets a boolean false (``--no-...``).
        metavar: the flag's value in ``--help``.
        group: fields that give one setting in two ways (the token, or the file holding it):
            a flag for either one sets aside the variables of both.
    """

    flag: str | None = None
    off: str | None = None
    metavar: str | None = None
    group: str | None = None


class _FieldProblem(ValueError):
    """A value error about ``field``, raised where pydantic cannot tell which field it was."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class Settings(BaseSettings):
    """Everything the server needs. ``Settings(...)`` takes the values given (and defaults);
    :meth:`from_env` reads the documented variables; ``mai-image-mcp`` adds its flags.

    Each field's description is its ``--help`` text. Secrets (``api_key``, ``auth_token``) are
    :class:`~pydantic.SecretStr`: never in a repr, a log line or an error message.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_ignore_empty=True,
        frozen=True,
        extra="forbid",
        validate_by_name=True,  # Settings(api_key=...) as well as the variable PIXAZO_API_KEY
        validate_by_alias=True,
        hide_input_in_errors=True,
    )

    api_key: Annotated[SecretStr | None, Option()] = Field(
        None,
        validation_alias=API_KEY_ENV,
        description="The Pixazo API key; without it the server starts, lists its tools, and "
        "each call explains what to set.",
    )
    base_url: Annotated[str | None, Option()] = Field(
        None, validation_alias=BASE_URL_ENV, description="The gateway origin."
    )
    max_wait: Annotated[float, Option("--max-wait", metavar="SECONDS")] = Field(
        DEFAULT_MAX_WAIT,
        gt=0,
        allow_inf_nan=False,
        description="Longest wait inside one tool call, in seconds (keep it under the client's "
        "tool-call timeout).",
    )
    preview: Annotated[PreviewMode, Option("--preview")] = Field(
        "preview", description="Inline previews: preview (384 px), thumbnail (160 px) or off."
    )
    resource_links: Annotated[bool, Option("--resource-links", off="--no-resource-links")] = Field(
        False, description="Add a resource_link per image to results."
    )
    output_dir: Annotated[Path | None, Option("--output-dir", metavar="DIR")] = Field(
        None, description="Also download images here and return their paths."
    )
    allowed_dirs: Annotated[tuple[Path, ...], NoDecode, Option("--allow-dir", metavar="DIR")] = (
        Field(
            (),
            description="A directory edit_image may read local files from; repeatable (the "
            f"variable: separated by {os.pathsep!r}).",
        )
    )
    log_level: Annotated[LogLevel, Option("--log-level")] = Field(
        "WARNING",
        description="The server's log level on stderr: WARNING shows the start line and "
        "warnings, INFO adds a line per job event and per HTTP request, DEBUG every status poll.",
    )
    auth_token: Annotated[
        SecretStr | None, Option("--auth-token", metavar="TOKEN", group="token")
    ] = Field(
        None,
        description="Bearer token HTTP clients must send. A flag shows in ps: prefer the "
        "variable or --auth-token-file.",
    )
    auth_token_file: Annotated[
        Path | None, Option("--auth-token-file", metavar="FILE", group="token")
    ] = Field(None, description="Read the bearer token from this file.")
    allowed_hosts: Annotated[_Items, Option("--allowed-host", metavar="HOST")] = Field(
        (),
        description="Also accept this Host header (name, name:port or name:*); repeatable (the "
        "variable: comma-separated).",
    )
    allowed_origins: Annotated[_Items, Option("--allowed-origin", metavar="ORIGIN")] = Field(
        (),
        description="Also accept this Origin header (https://name[:port]); repeatable (the "
        "variable: comma-separated).",
    )
    max_sessions: Annotated[int, Option("--max-sessions", metavar="N")] = Field(
        DEFAULT_MAX_SESSIONS,
        gt=0,
        description="HTTP: most sessions open at once; past it a new client gets 503 until "
        "one ends or idles out.",
    )
    session_idle_timeout: Annotated[float, Option("--session-idle-timeout", metavar="SECONDS")] = (
        Field(
            DEFAULT_SESSION_IDLE_TIMEOUT,
            gt=0,
            allow_inf_nan=False,
            description="HTTP: close a session after this long with no request in flight and no "
            "open GET stream (its client then starts a new one).",
        )
    )
    webhook_public_url: Annotated[str | None, Option("--webhook-public-url", metavar="URL")] = (
        Field(
            None,
            description="Push waiting (HTTP only): the URL the gateway reaches this server at "
            "(each replica its own); callbacks arrive at URL/mai-tools/webhooks/<token> on "
            "this app.",
        )
    )
    job_book: Annotated[str | None, Option("--job-book", metavar="PATH|URL|off")] = Field(
        None,
        validation_alias=JOB_BOOK_ENV,
        repr=False,  # a postgresql:// URL may hold a password
        description="The job book every job is written into, so an identical call after a "
        "timeout, a restart or on another replica continues a job instead of paying again: "
        "a file path, a postgresql:// URL (shared by replicas), or off (this process only); "
        "default: jobs.sqlite3 in the user's state directory.",
    )
    # Team server: who may see every principal's jobs.
    operators: Annotated[_Items, Option("--operator", metavar="NAME")] = Field(
        (),
        description="A principal (a named token's name, an OAuth principal) that sees and may "
        "read every principal's jobs; repeatable (the variable: comma-separated).",
    )
    # The audit log (issue 22 item 5; mai_tools.jobbook.AuditLog):
    audit_log: Annotated[Path | None, Option("--audit-log", metavar="PATH")] = Field(
        None,
        description="Append one JSON line per change of a job's state (and per call a limit "
        "refused) to this file, created with mode 600: time, principal, tool, request id, "
        "images, status, estimated cost, the prompt's sha256. Processes and replicas may share "
        "one local file.",
    )
    audit_prompts: Annotated[bool, Option("--audit-prompts", off="--no-audit-prompts")] = Field(
        False,
        description="Also write each prompt's text into the audit log (else only its sha256).",
    )
    # Confirmation for costly calls (issue 22 item 4, mcp_server/_confirm.py):
    confirm_above: Annotated[int | None, Option("--confirm-above", metavar="N")] = Field(
        None,
        ge=0,
        description="Ask the user to confirm (form elicitation) a generate_image/edit_image "
        "call of more than N images before sending it; 0 asks for every call; default: "
        "never ask.",
    )
    if_unconfirmable: Annotated[Literal["refuse", "proceed"], Option("--if-unconfirmable")] = Field(
        "refuse",
        description="A call that needs a confirmation from a client that cannot ask the user "
        "(no elicitation capability): refuse it (nothing is sent) or proceed without asking.",
    )
    request_state_key: Annotated[SecretStr | None, Option()] = Field(
        None,
        description="A secret of at least 32 characters, the same on every replica, that seals "
        "a 2026-07-28 confirmation's state so its answer may reach any replica (or a restarted "
        "server); default: a key of this process only.",
    )
    # Identity on the HTTP server (issue 22, auth; mcp_server/_auth.py, _tokens.py):
    tokens_file: Annotated[Path | None, Option("--tokens-file", metavar="FILE")] = Field(
        None,
        description="Named bearer tokens (mai-image-mcp tokens add NAME): each caller is its "
        "token's name; read again when the file changes.",
    )
    public_url: Annotated[str | None, Option("--public-url", metavar="URL")] = Field(
        None,
        description="The URL clients reach the MCP endpoint at, e.g. https://mcp.example.com/"
        "mcp: OAuth's resource id (and default audience).",
    )
    oauth_issuer: Annotated[str | None, Option("--oauth-issuer", metavar="URL")] = Field(
        None, description="OAuth: accept access tokens (JWTs) from this issuer (iss)."
    )
    oauth_audience: Annotated[str | None, Option("--oauth-audience", metavar="AUD")] = Field(
        None, description="OAuth: the audience (aud) tokens must be for; default the public URL."
    )
    oauth_jwks_url: Annotated[str | None, Option("--oauth-jwks-url", metavar="URL")] = Field(
        None, description="OAuth: the issuer's key set (jwks_uri), read at start."
    )
    oauth_principal_claim: Annotated[str, Option("--oauth-principal-claim", metavar="CLAIM")] = (
        Field(
            "sub",
            pattern=r"^[A-Za-z0-9_.:/-]{1,64}$",
            description="OAuth: the claim that names the caller (email is common).",
        )
    )
    # The HTTP transport's connection guard (issue 23, M9 on the server's own port):
    max_connections: Annotated[int, Option("--max-connections", metavar="N")] = Field(
        DEFAULT_MAX_CONNECTIONS,
        gt=0,
        description="HTTP: most connections open at once; one more is closed on arrival (a "
        "flood cannot take the process's file descriptors).",
    )
    max_connections_per_client: Annotated[
        int, Option("--max-connections-per-client", metavar="N")
    ] = Field(
        0,
        ge=0,
        description="HTTP: most connections open at once from one client address; 0: no cap "
        "of its own (behind a reverse proxy every user is the proxy's one address). Set it "
        "(e.g. 64) when clients connect directly.",
    )
    request_read_timeout: Annotated[float, Option("--request-read-timeout", metavar="SECONDS")] = (
        Field(
            DEFAULT_REQUEST_READ_TIMEOUT,
            gt=0,
            allow_inf_nan=False,
            description="HTTP: a request's headers and body must arrive within this long, or its "
            "connection is closed (slow senders, slowloris); raise it for large edit_image uploads "
            "over slow links. The answer (a tool call's stream) is not limited by it.",
        )
    )
    # Operating it (issue 25 item 2; mcp_server/_logs.py):
    log_format: Annotated[Literal["text", "json"], Option("--log-format")] = Field(
        "text",
        description="stderr lines as text, or as JSON objects (one per line: time, level, "
        "logger, message, and a job line's fields) for log shippers.",
    )
    # Spending limits (issue 22; the rules: mai_tools.jobbook._limits); all off unless set.
    daily_images: Annotated[lv.DailyImages, Option("--daily-images", metavar="N")] = None
    server_daily_images: Annotated[
        lv.ServerDailyImages, Option("--server-daily-images", metavar="N")
    ] = None
    max_images_per_call: Annotated[
        lv.MaxImagesPerCall, Option("--max-images-per-call", metavar="N")
    ] = None
    price_per_image: Annotated[lv.PricePerImage, Option("--price-per-image", metavar="AMOUNT")] = (
        None
    )
    daily_spend: Annotated[lv.DailySpend, Option("--daily-spend", metavar="AMOUNT")] = None
    confirm_above_cost: Annotated[
        lv.ConfirmAboveCost, Option("--confirm-above-cost", metavar="AMOUNT")
    ] = None
    currency: Annotated[lv.CurrencyCode, Option("--currency", metavar="CODE")] = lv.DEFAULT_CURRENCY
    # Prometheus metrics (issue 25 item 2; mcp_server/_metrics.py):
    metrics: Annotated[MetricsSwitch, Option("--metrics", off="--no-metrics")] = False
    # Set by the program that embeds the server, not by variables or flags:
    heartbeat: float = Field(
        5.0, gt=0, allow_inf_nan=False, description="Seconds between progress heartbeats."
    )
    remember_durations: bool = Field(
        False,
        description="Keep learned job durations in the user's cache between runs (as mai-image "
        "does); mai-image-mcp turns it on, an embedded create_server() not.",
    )
    durations_key: str | None = Field(
        None, description="The key learned durations are kept under (default: the base URL)."
    )

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            problems = _problems(exc)
            raise SettingsError(_render(problems, {}), problems) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Settings(...) is what the caller says, as before: an embedding program's values are
        # not mixed with whatever MAI_MCP_* its process happens to have. from_env() reads them.
        return (init_settings,)

    @classmethod
    def from_env(cls) -> Settings:
        """The settings the environment variables give (and defaults for the rest)."""
        return load()

    # ------------------------------------------------------------------ checks

    @model_validator(mode="before")
    @classmethod
    def _prepare(cls, data: Any) -> Any:
        """Blank values count as not given (surrounding whitespace is dropped), and the token
        is read from its file."""
        if not isinstance(data, dict):
            return data
        stripped = {k: v.strip() if isinstance(v, str) else v for k, v in data.items()}
        data = {k: v for k, v in stripped.items() if v != ""}
        if data.get("auth_token_file") is None:
            return data
        if data.get("auth_token") is not None:
            raise _FieldProblem(
                "auth_token_file", "give the token or the file that holds it, not both."
            )
        try:
            token = read_token_file(data["auth_token_file"])
        except ValueError as exc:
            raise _FieldProblem("auth_token_file", str(exc)) from None
        return {**data, "auth_token": token}

    @field_validator("preview", "if_unconfirmable", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("allowed_dirs", mode="before")
    @classmethod
    def _allowed_dirs(cls, value: object) -> tuple[Path, ...]:
        items = _items(value, os.pathsep)
        if isinstance(value, str) and "" in items:
            raise ValueError(
                f"has an empty entry (two {os.pathsep!r} in a row, or one at an end); an empty "
                "entry would mean the working directory. Name each directory, separated by "
                f"{os.pathsep!r}."
            )
        # Made absolute once, here: a later chdir does not move what is allowed.
        return tuple(allowed_directory(item) for item in items)

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _allowed_hosts(cls, value: object) -> tuple[str, ...]:
        return tuple(check_allowed_host(h) for h in _items(value, ",") if h)

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _allowed_origins(cls, value: object) -> tuple[str, ...]:
        return tuple(check_allowed_origin(o) for o in _items(value, ",") if o)

    @field_validator("operators", mode="before")
    @classmethod
    def _operators(cls, value: object) -> tuple[str, ...]:
        names = tuple(str(n) for n in _items(value, ",") if n)
        for name in names:
            if not name.isprintable() or name != name.strip():
                raise ValueError(f"operator name {name!r}: use the principal's name as is")
        return names

    @field_validator("auth_token")
    @classmethod
    def _auth_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_auth_token(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _principals_need_a_book(self) -> Settings:
        many = self.tokens_file is not None or self.oauth_issuer is not None
        if many and (self.job_book or "").strip().lower() == "off":
            raise _FieldProblem(
                "job_book",
                "is off, and callers are told apart (--tokens-file or OAuth): which caller made "
                "which job is kept in the job book, so without it no one's jobs could be kept "
                "from the others. Keep the book on (drop --job-book off / MAI_JOB_BOOK=off).",
            )
        return self

    @model_validator(mode="after")
    def _audit_prompts_need_a_log(self) -> Settings:
        if self.audit_prompts and self.audit_log is None:
            raise _FieldProblem(
                "audit_prompts",
                "writes prompts into the audit log, and there is none: give --audit-log PATH "
                "(MAI_MCP_AUDIT_LOG) too, or drop it.",
            )
        return self

    @field_validator("request_state_key")
    @classmethod
    def _request_state_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_STATE_KEY_LENGTH:
            raise ValueError(
                f"the key is too short (at least {MIN_STATE_KEY_LENGTH} characters); make one "
                """with: python -c "import secrets; print(secrets.token_urlsafe(32))" and give """
                "every replica the same one."
            )
        return value

    @field_validator("public_url", "oauth_issuer", "oauth_jwks_url")
    @classmethod
    def _identity_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        loopback = (parts.hostname or "") in ("localhost", "127.0.0.1", "::1")
        if not parts.hostname or parts.scheme not in ("https", *(("http",) if loopback else ())):
            raise ValueError(
                f"give an https:// URL (http:// only for localhost), e.g. "
                f"https://login.example.com/...; got {value[:100]!r}."
            )
        if parts.username or parts.password or parts.fragment:
            raise ValueError("give a URL without credentials (user:password@) or #fragment.")
        return value

    @field_validator("webhook_public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        try:
            return check_public_url(value)
        except ConfigurationError as exc:
            raise ValueError(str(exc)) from None


# ---------------------------------------------------------------------- fields, names, loading


def options() -> Iterator[tuple[str, FieldInfo, Option]]:
    """The public fields of :class:`Settings`, in order: (name, field, its Option)."""
    for name, info in Settings.model_fields.items():
        marks = [m for m in info.metadata if isinstance(m, Option)]
        if marks:
            yield name, info, marks[0]


def env_name(name: str) -> str:
    """The environment variable of field ``name``."""
    alias = Settings.model_fields[name].validation_alias
    return alias if isinstance(alias, str) else f"{ENV_PREFIX}{name.upper()}"


def is_secret(info: FieldInfo) -> bool:
    return SecretStr in (info.annotation, *typing.get_args(info.annotation))


def _field_of(key: str) -> str:
    for name, info in Settings.model_fields.items():
        if key in (name, info.validation_alias):
            return name
    return key


def _label(name: str, labels: Mapping[str, str]) -> str:
    if name in labels:
        return labels[name]
    public = {n for n, _, _ in options()}
    return f"{name} ({env_name(name)})" if name in public else name


def _problems(exc: ValidationError) -> tuple[tuple[str, str], ...]:
    """(field, what is wrong) per error; a secret's value is never quoted."""
    found = []
    for error in exc.errors(include_url=False):
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, _FieldProblem):
            name = cause.field
        else:
            name = _field_of(str(error["loc"][0])) if error["loc"] else ""
        if isinstance(cause, ValueError):
            text = str(cause)
        else:
            text = error["msg"]
            info = Settings.model_fields.get(name)
            if info is not None and not is_secret(info) and isinstance(error["input"], str):
                text += f" (got {error['input'][:80]!r})"
        found.append((name, text))
    return tuple(found)


def _render(problems: tuple[tuple[str, str], ...], labels: Mapping[str, str]) -> str:
    """One line per problem, naming the variable or flag (``labels``: field -> name) it came
    from; a field with no label is named as a ``Settings`` argument (and its variable)."""
    return "\n".join(f"{_label(name, labels)}: {text}" if name else text for name, text in problems)


def _environment() -> dict[str, object]:
    """The public fields' values in the environment, by field name (raw text)."""
    public = {n for n, _, _ in options()}
    read = EnvSettingsSource(Settings)()
    found = {_field_of(key): value for key, value in read.items()}
    return {name: value for name, value in found.items() if name in public}


def load(flags: Mapping[str, object] | None = None, **given: Any) -> Settings:
    """Settings from the environment, with ``flags`` (field -> value from its command-line
    flag) on top, and ``given`` (field -> value a program sets) on top of those.

    Raises:
        SettingsError: a bad value, named by the variable or flag it came from.
    """
    flags = dict(flags or {})
    values = _environment()
    labels = {name: env_name(name) for name in values}
    groups = {option.group for name, _, option in options() if name in flags and option.group}
    for name, _, option in options():
        if option.group in groups and name in values:
            del values[name], labels[name]  # a flag of the group sets its variables aside
    flag_names = {name: option.flag for name, _, option in options() if option.flag}
    for name, value in flags.items():
        values[name], labels[name] = value, flag_names[name]
    values.update(given)
    labels.update({name: name for name in given})
    try:
        return Settings(**values)
    except SettingsError as exc:
        raise SettingsError(_render(exc.problems, labels), exc.problems) from None
