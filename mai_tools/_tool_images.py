"""Images out of tool messages, for chat APIs that take images from the user only.

OpenAI's Chat Completions API refuses image parts in a ``role: "tool"`` message (or newer
models say they cannot see them); Anthropic, Gemini and OpenAI's Responses API take them. So
for the former, :func:`move_tool_images` rewrites a conversation: each image block of a
:class:`~langchain_core.messages.ToolMessage` becomes the text "see the image below", and the
images follow, after the run of tool messages they came in (all tool results of one model
turn must come right after it), in one :class:`~langchain_core.messages.HumanMessage` that
says which tool call each came from. Messages without images are returned as they are.

:class:`mai_tools.middleware.ToolImagesMiddleware` applies it to every model call of a
LangChain agent whose model needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from langchain_core.messages import BaseMessage, HumanMessage, ToolMessage

SEE_BELOW: Final = "see the image below"
"""What a moved image leaves in its tool result."""

IMAGE_BLOCK_TYPES: Final = frozenset({"image", "image_url", "input_image"})
"""Content block types that carry an image: langchain-core's standard block, and the OpenAI
Chat Completions and Responses shapes a tool may have written itself."""


def _is_image(block: object) -> bool:
    return isinstance(block, dict) and block.get("type") in IMAGE_BLOCK_TYPES


def _split(message: ToolMessage) -> tuple[ToolMessage, list[dict[str, Any]]]:
    """The tool message with its images replaced by a pointer, and the images."""
    if isinstance(message.content, str) or not any(_is_image(b) for b in message.content):
        return message, []
    kept: list[str | dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    for block in message.content:
        if _is_image(block):
            assert isinstance(block, dict)
            images.append(block)
            kept.append({"type": "text", "text": f"({SEE_BELOW})"})
        else:
            kept.append(block)
    return message.model_copy(update={"content": kept}), images


def _images_message(moved: list[tuple[ToolMessage, list[dict[str, Any]]]]) -> HumanMessage:
    content: list[str | dict[str, Any]] = []
    for message, images in moved:
        name = f"{message.name} " if message.name else ""
        noun = "image" if len(images) == 1 else f"{len(images)} images"
        content.append(
            {
                "type": "text",
                "text": f"The {noun} returned by tool call {name}({message.tool_call_id}):",
            }
        )
        content.extend(images)
    return HumanMessage(content=content)


def move_tool_images(messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    """``messages`` with every tool message's image blocks moved into a user message that
    follows its run of tool messages (see the module docstring). Never mutates its input."""
    out: list[BaseMessage] = []
    moved: list[tuple[ToolMessage, list[dict[str, Any]]]] = []
    for message in messages:
        if isinstance(message, ToolMessage):
            kept, images = _split(message)
            out.append(kept)
            if images:
                moved.append((message, images))
            continue
        if moved:
            out.append(_images_message(moved))
            moved = []
        out.append(message)
    if moved:
        out.append(_images_message(moved))
    return out


__all__ = ["IMAGE_BLOCK_TYPES", "SEE_BELOW", "move_tool_images"]
