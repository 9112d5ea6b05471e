"""The agent-answer layer: one outcome for every error class, and adapters that agree.

The table below is the one place that says, for each exception the client raises, what an
agent is told and who must act. A new exception class in ``mai_tools.__all__`` fails
``test_every_exception_class_is_in_the_table`` until it is classified here.
"""

from __future__ import annotations

import copy
import pickle
import re
from pathlib import Path
from typing import Any

import pydantic
import pytest
from mcp import Client
from mcp.types import TextContent
from pydantic import SecretStr

import mai_tools
from mai_tools import (
    APIConnectionError,
    APIError,
    APIResponseError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    DownloadError,
    EditRequest,
    GenerateRequest,
    IdempotencyKeyReusedError,
    ImageResult,
    InsufficientBalanceError,
    InvalidArgumentError,
    InvalidImageError,
    JobBookError,
    JobFailedError,
    JobStatus,
    JobTimeoutError,
    JobUnknownError,
    MAIImageClient,
    MAIImageError,
    MissingAPIKeyError,
    NotFoundError,
    OperatorError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    SpendingLimitError,
    Status,
)
from mai_tools._agent import (
    Done,
    Failed,
    FailureKind,
    ImageJobResult,
    Running,
    answer_text,
    outcome_of,
    run,
    structured,
)
from mai_tools.emulator import EmulatorConfig, run_emulator
from mai_tools.jobbook._limits import SpendingLimits, Usage, daily_refusal, per_call_refusal
from mai_tools.langchain import MAIImageGenerateTool
from mcp_server import Settings, create_server
from tests.support.fakes import KEY, RID


def _status(status: str) -> JobStatus:
    return JobStatus.from_body({"request_id": RID, "status": status, "error": "bad luck"})


def _validation_error() -> pydantic.ValidationError:
    try:
        GenerateRequest.model_validate({"prompt": "hi"})
    except pydantic.ValidationError as exc:
        return exc
    raise AssertionError("expected a validation error")


def _status_error(cls: type[APIStatusError], code: int, **kw: Any) -> APIStatusError:
    return cls("refused", status_code=code, **kw)


def _refused(error: SpendingLimitError | None) -> SpendingLimitError:
    assert error is not None
    return error


# (exception, outcome kind or "running", who must act, a phrase the answer must contain)
TABLE: list[tuple[BaseException, FailureKind | str, str, str]] = [
    (_validation_error(), FailureKind.INVALID_INPUT, "model", "prompt: String should have"),
    (
        InvalidArgumentError.from_validation(_validation_error()),
        FailureKind.INVALID_INPUT,
        "model",
        "nothing was sent",
    ),
    (InvalidArgumentError("Invalid request id"), FailureKind.INVALID_INPUT, "model", "Nothing"),
    (InvalidImageError("not an image"), FailureKind.INVALID_INPUT, "model", "not an image"),
    (
        IdempotencyKeyReusedError(
            "idempotency_key 'k' was used for another request. Nothing was sent.",
            idempotency_key="k",
            field="prompt",
            created_at=0.0,
        ),
        FailureKind.INVALID_INPUT,
        "model",
        "Nothing was sent",
    ),
    (
        JobUnknownError(
            "A job for idempotency key 'k' may have been created at ...: not sent again.",
            idempotency_key="k",
            created_at=0.0,
        ),
        FailureKind.MAY_EXIST,
        "service",
        "may have been created",
    ),
    (
        JobBookError("The job book at /x failed: disk full. Nothing was sent."),
        FailureKind.OPERATOR,
        "operator",
        "disk full",
    ),
    (MissingAPIKeyError("no key"), FailureKind.OPERATOR, "operator", "PIXAZO_API_KEY"),
    (ConfigurationError("bad base_url"), FailureKind.OPERATOR, "operator", "bad base_url"),
    (
        _status_error(AuthenticationError, 401),
        FailureKind.OPERATOR,
        "operator",
        "retrying will not help",
    ),
    (
        _status_error(InsufficientBalanceError, 402),
        FailureKind.OPERATOR,
        "operator",
        "operator",
    ),
    (_status_error(PermissionDeniedError, 403), FailureKind.OPERATOR, "operator", "operator"),
    (_status_error(BadRequestError, 400), FailureKind.INVALID_INPUT, "model", "rejected"),
    (_status_error(APIStatusError, 418), FailureKind.INVALID_INPUT, "model", "rejected"),
    (
        _status_error(NotFoundError, 404, request_id=RID),
        FailureKind.UNKNOWN_JOB,
        "model",
        "request_id exactly",
    ),
    (_status_error(NotFoundError, 404), FailureKind.OPERATOR, "operator", "PIXAZO_BASE_URL"),
    (
        _status_error(RateLimitError, 429, retry_after=30.0),
        FailureKind.RATE_LIMITED,
        "service",
        "no job was created. Try again in 30s",
    ),
    (
        _status_error(QuotaExceededError, 403, retry_after=754.0),
        FailureKind.RATE_LIMITED,
        "service",
        "Try again in 754s",
    ),
    (_status_error(ServerError, 503), FailureKind.SERVICE, "service", "Try again in a minute"),
    (APIConnectionError("no route"), FailureKind.SERVICE, "service", "unavailable"),
    (APITimeoutError("slow"), FailureKind.SERVICE, "service", "unavailable"),
    (
        APIConnectionError("dropped", may_have_arrived=True),
        FailureKind.MAY_EXIST,
        "service",
        "Do not submit the same request again",
    ),
    (APIResponseError("garbled"), FailureKind.SERVICE, "service", "unavailable"),
    (
        APIResponseError("odd id", may_have_arrived=True),
        FailureKind.MAY_EXIST,
        "service",
        "may be running and charged",
    ),
    (JobFailedError(_status("FAILED")), FailureKind.JOB_FAILED, "model", "Rephrase the prompt"),
    (JobFailedError(_status("ERROR")), FailureKind.JOB_ERROR, "service", "not charged"),
    (DownloadError("disk full"), FailureKind.SERVICE, "service", "disk full"),
    (MAIImageError("anything else"), FailureKind.SERVICE, "service", "anything else"),
    (APIError("gateway trouble"), FailureKind.SERVICE, "service", "gateway trouble"),
    (OperatorError("wallet"), FailureKind.OPERATOR, "operator", "must fix this"),
    (
        _refused(per_call_refusal(SpendingLimits(max_images_per_call=2), 4)),
        FailureKind.INVALID_INPUT,
        "model",
        "Ask for 2 or fewer",
    ),
    (
        _refused(daily_refusal(SpendingLimits(daily_images=3), 1, Usage(3, 3), 1_800_000_000.0)),
        FailureKind.OPERATOR,
        "operator",
        "No image can be made until the limit resets at 2027-01-16 00:00 UTC",
    ),
    (
        JobTimeoutError(
            request_id=RID, polling_url=None, last_status=_status("PROCESSING"), timeout=5
        ),
        "running",
        "",
        "get_image_job",
    ),
]


@pytest.mark.parametrize(
    ("exc", "kind", "who", "phrase"), TABLE, ids=[type(row[0]).__name__ for row in TABLE]
)
def test_outcome_for_every_error_class(
    exc: BaseException, kind: FailureKind | str, who: str, phrase: str
) -> None:
    outcome = outcome_of(exc)
    if kind == "running":
        assert isinstance(outcome, Running)
        assert outcome.status == "PROCESSING"
        assert phrase in answer_text(outcome)
        assert phrase in (structured(outcome).next_step or "")
        return
    assert isinstance(outcome, Failed)
    assert outcome.kind is kind
    assert outcome.who == who
    assert outcome.error is exc
    assert phrase in outcome.message, outcome.message
    # Operator problems are exactly those of the OperatorError mixin (plus a wrong route).
    if isinstance(exc, OperatorError):
        assert outcome.who == "operator"


def test_every_exception_class_is_in_the_table() -> None:
    exported = {
        obj
        for name in mai_tools.__all__
        if isinstance(obj := getattr(mai_tools, name), type) and issubclass(obj, BaseException)
    }
    covered = {type(row[0]) for row in TABLE}
    assert exported - covered == set()


def test_a_foreign_exception_is_a_bug_and_propagates() -> None:
    with pytest.raises(KeyError):
        outcome_of(KeyError("bug"))

    def boom() -> ImageResult:
        raise KeyError("bug")

    with (
        MAIImageClient(KEY, base_url="https://gateway.pixazo.ai") as client,
        pytest.raises(KeyError),
    ):
        run(client, lambda _client: boom())


def test_no_status_read_yet_is_unknown_not_a_guess() -> None:
    outcome = outcome_of(
        JobTimeoutError(request_id=RID, polling_url=None, last_status=None, timeout=1)
    )
    assert isinstance(outcome, Running)
    assert outcome.status == "UNKNOWN"


def test_a_failed_save_is_still_done(tmp_path: Path) -> None:
    result = ImageResult(request_id=RID, image_urls=["ftp://nowhere/x.png"])
    with MAIImageClient(KEY, base_url="https://gateway.pixazo.ai") as client:
        outcome = run(client, lambda _client: result, save_to=tmp_path)
    assert isinstance(outcome, Done)
    assert outcome.save_error is not None
    assert "not saved to disk" in answer_text(outcome)
    assert structured(outcome).done is True


# --------------------------------------------------------------------------- results are data


def _result() -> ImageResult:
    status = JobStatus.from_body(
        {
            "request_id": RID,
            "status": "COMPLETED",
            "output": {"media_url": ["https://cdn.example.com/a.png"], "media_type": "image/png"},
            "created_at": "2026-12-01T10:00:00Z",
            "completed_at": "2026-12-01T10:00:05Z",
        }
    )
    return ImageResult.from_status(status)


@pytest.mark.parametrize(
    "request_",
    [
        None,
        GenerateRequest(prompt="a lighthouse", num_images=2),
        EditRequest(prompt="make it blue", image_urls=["data:image/png;base64,AAAA"]),
    ],
)
def test_a_result_pickles_copies_and_equals_its_json_round_trip(
    request_: GenerateRequest | EditRequest | None,
) -> None:
    result = _result().model_copy(update={"request": request_})
    for twin in (
        pickle.loads(pickle.dumps(result)),
        copy.deepcopy(result),
        copy.copy(result),
        ImageResult.model_validate_json(result.model_dump_json()),
    ):
        assert twin == result
        assert twin.image_urls == result.image_urls
        assert type(twin.request) is type(request_)
    assert _result() != _result().model_copy(update={"request_id": "other"})


def test_results_of_a_real_client_are_plain_data(tmp_path: Path) -> None:
    config = EmulatorConfig(api_keys=(KEY,), min_duration=0, max_duration=0)
    with run_emulator(config) as emu, MAIImageClient(KEY, base_url=emu.base_url) as client:
        result = client.generate("a plain data result")
        assert result.request == GenerateRequest(prompt="a plain data result")
        assert result.prompt == "a plain data result"
        clone = pickle.loads(pickle.dumps(result))
        assert clone == result
        assert not hasattr(clone, "_saver")  # nothing of the client rides along
        assert [p.suffix for p in client.save(clone, tmp_path)] == [".png"]
        # The old way still works, for one release, with a warning that names the new one.
        with pytest.deprecated_call(match=r"client\.save\(result, directory\)"):
            assert [p.suffix for p in clone.save(tmp_path / "old")] == [".png"]


# --------------------------------------------------------------------------- adapters agree


def _normalise(text: str) -> str:
    return re.sub(r"microsoft-mai-image-2-5_[0-9a-f-]+", "<id>", text)


async def test_langchain_and_mcp_say_the_same_for_a_running_job_and_a_finished_one() -> None:
    config = EmulatorConfig(api_keys=(KEY,), min_duration=1.0, max_duration=1.0)
    with run_emulator(config) as emu:
        tool = MAIImageGenerateTool(api_key=SecretStr(KEY), base_url=emu.base_url, wait_timeout=0.3)
        settings = Settings(api_key=KEY, base_url=emu.base_url, max_wait=0.3, preview="off")
        lc_running = await tool.ainvoke(
            {"type": "tool_call", "id": "1", "name": tool.name, "args": {"prompt": "slow one"}}
        )
        async with Client(create_server(settings)) as client:
            mcp_running = await client.call_tool("generate_image", {"prompt": "slow one"})
        first = mcp_running.content[0]
        assert isinstance(first, TextContent)
        assert _normalise(lc_running.content) == _normalise(first.text)
        assert "get_image_job" in first.text
        # The structured answer is one model: the LangChain artifact is the MCP structuredContent.
        assert isinstance(lc_running.artifact, ImageJobResult)
        assert mcp_running.structured_content is not None
        lc_data = lc_running.artifact.model_dump(mode="json")
        assert set(lc_data) == set(mcp_running.structured_content)
        assert lc_data["done"] is mcp_running.structured_content["done"] is False
        assert mcp_running.structured_content["next_step"].startswith("Call get_image_job")

        tool_done = MAIImageGenerateTool(
            api_key=SecretStr(KEY), base_url=emu.base_url, wait_timeout=10
        )
        lc_done = await tool_done.ainvoke(
            {"type": "tool_call", "id": "2", "name": tool.name, "args": {"prompt": "a fast one"}}
        )
        settings_done = Settings(api_key=KEY, base_url=emu.base_url, max_wait=10, preview="off")
        async with Client(create_server(settings_done)) as client:
            mcp_done = await client.call_tool("generate_image", {"prompt": "a fast one"})
        first = mcp_done.content[0]
        assert isinstance(first, TextContent)
        normalise_urls = re.compile(r"https?://\S+")
        assert normalise_urls.sub("<url>", _normalise(lc_done.content)) == normalise_urls.sub(
            "<url>", _normalise(first.text)
        )
        assert lc_done.artifact.status == Status.COMPLETED.value


async def test_mcp_and_langchain_give_the_same_argument_error_text() -> None:
    tool = MAIImageGenerateTool(
        api_key=SecretStr(KEY), base_url="http://127.0.0.1:9", wait_timeout=1
    )
    message = await tool.ainvoke(
        {"type": "tool_call", "id": "1", "name": tool.name, "args": {"prompt": "hi"}}
    )
    assert message.status == "error"
    assert message.content.startswith("Invalid arguments, nothing was sent")
    assert "prompt" in message.content


async def test_the_async_edit_reads_its_file_off_the_event_loop(tmp_path: Path) -> None:
    import threading

    from tests.support.fakes import PNG_1PX

    path = tmp_path / "source.png"
    path.write_bytes(PNG_1PX)
    readers: list[threading.Thread] = []

    class Source:
        """A path that notes which thread opens it."""

        def __fspath__(self) -> str:
            readers.append(threading.current_thread())
            return str(path)

    config = EmulatorConfig(api_keys=(KEY,), min_duration=0, max_duration=0)
    with run_emulator(config) as emu:
        async with mai_tools.AsyncMAIImageClient(KEY, base_url=emu.base_url) as client:
            result = await client.edit("make it blue", Source())
    assert result.image_urls
    assert readers
    assert threading.main_thread() not in readers  # the loop runs on the main thread here
