"""LangChain agent middleware: let chat models that take no images in tool results see the
images ``view_image`` returns.

OpenAI's Chat Completions API refuses image parts in tool messages; Anthropic, Gemini and
OpenAI's Responses API take them. Add :class:`ToolImagesMiddleware` to an agent and, before
each call to a model that needs it, the image blocks of its tool messages are moved into a
user message right after them (the tool result says "see the image below")::

    from langchain.agents import create_agent
    from mai_tools import MAIImageToolkit
    from mai_tools.middleware import ToolImagesMiddleware

    agent = create_agent(
        "openai:gpt-4.1", tools=MAIImageToolkit().get_tools(), middleware=[ToolImagesMiddleware()]
    )

The agent's state keeps the messages as the tools wrote them: only what is sent to the model
changes. Needs ``langchain`` (``pip install "mai-tools[agents]"``); without an agent, the same
rewrite is :func:`move_tool_images` (langchain-core only) over any list of messages.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal, cast

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AnyMessage

from ._tool_images import SEE_BELOW, move_tool_images

try:
    from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
except ImportError as exc:  # pragma: no cover - the agents extra is missing
    raise ImportError(
        "mai_tools.middleware needs the langchain package: pip install 'mai-tools[agents]' "
        "(mai_tools._tool_images.move_tool_images needs only langchain-core)."
    ) from exc

When = Literal["auto", "always"]


def takes_tool_images(model: object) -> bool:
    """Does ``model`` send images inside tool results to its API?

    False for LangChain's OpenAI chat models (``ChatOpenAI``, ``AzureChatOpenAI`` and the
    other ``BaseChatOpenAI`` subclasses) while they use the Chat Completions API; True for
    every other model (Anthropic, Gemini, Bedrock Converse and OpenAI's Responses API take
    them).
    """
    if not any(cls.__name__ == "BaseChatOpenAI" for cls in type(model).__mro__):
        return True
    chooses = getattr(model, "_use_responses_api", None)
    if callable(chooses):  # langchain-openai's own choice (use_responses_api=None: by model)
        return bool(chooses({}))
    return getattr(model, "use_responses_api", None) is True


class ToolImagesMiddleware(AgentMiddleware[Any, Any]):
    """Move image blocks out of tool messages for models that take none there.

    Args:
        when: ``"auto"`` (default): only for models :func:`takes_tool_images` says need it
            (OpenAI Chat Completions); ``"always"``: for every model (a router or gateway
            model this cannot recognise).
    """

    def __init__(self, when: When = "auto") -> None:
        super().__init__()
        if when not in ("auto", "always"):
            raise ValueError(f"when must be 'auto' or 'always', not {when!r}")
        self.when = when

    def _needs(self, model: BaseChatModel | Any) -> bool:
        return self.when == "always" or not takes_tool_images(model)

    def _rewritten(self, request: ModelRequest[Any]) -> ModelRequest[Any]:
        if not self._needs(request.model):
            return request
        messages = move_tool_images(request.messages)
        if len(messages) == len(request.messages):
            return request  # no image was moved
        return request.override(messages=cast("list[AnyMessage]", messages))

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> Any:
        return handler(self._rewritten(request))

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> Any:
        return await handler(self._rewritten(request))


__all__ = ["SEE_BELOW", "ToolImagesMiddleware", "move_tool_images", "takes_tool_images"]
