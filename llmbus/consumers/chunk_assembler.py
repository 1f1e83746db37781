"""``ChunkAssembler``: OpenAI stream chunks in, the equivalent non-streamed object out.

A streamed request's final ``chat.completion`` / ``text_completion`` is assembled here,
the way OpenAI clients accumulate a stream: text appended per choice, tool calls merged by
their index (id and name from the first fragment, arguments appended), logprobs appended.
A whole response from the engine goes through the same steps, so both leave in one shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_LEGACY_LOGPROB_LISTS = ("tokens", "token_logprobs", "top_logprobs", "text_offset")


@dataclass
class _Choice:
    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    logprobs: dict[str, list[Any]] | None = None
    finish_reason: str | None = None
    stop_reason: Any = None


class ChunkAssembler:
    def __init__(self, *, chat: bool) -> None:
        self._chat = chat
        self._choices: dict[int, _Choice] = {}
        self.usage: dict[str, int] | None = None

    def add(self, chunk: dict[str, Any]) -> None:
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for raw in chunk.get("choices") or ():
            choice = self._choices.setdefault(int(raw.get("index", 0)), _Choice())
            if self._chat:
                self._add_delta(choice, raw.get("delta") or {})
            elif raw.get("text"):
                choice.text.append(raw["text"])
            if raw.get("logprobs"):
                self._add_logprobs(choice, raw["logprobs"])
            if raw.get("finish_reason") is not None:
                choice.finish_reason = raw["finish_reason"]
                choice.stop_reason = raw.get("stop_reason")

    def add_whole(self, response: dict[str, Any]) -> None:
        """A non-streamed response (``chat.completion`` / ``text_completion``), taken in
        as the one chunk it is equivalent to, so both paths normalise alike."""
        choices = []
        for raw in response.get("choices") or ():
            choice = {k: raw.get(k) for k in ("index", "logprobs", "finish_reason", "stop_reason")}
            if self._chat:
                message = dict(raw.get("message") or {})
                calls = message.get("tool_calls") or ()
                message["tool_calls"] = [{**c, "index": i} for i, c in enumerate(calls)]
                choice["delta"] = message
            else:
                choice["text"] = raw.get("text")
            choices.append(choice)
        self.add({"choices": choices, "usage": response.get("usage")})

    def completion_tokens(self) -> int:
        return int((self.usage or {}).get("completion_tokens", 0))

    @staticmethod
    def _add_delta(choice: _Choice, delta: dict[str, Any]) -> None:
        if delta.get("content"):
            choice.text.append(delta["content"])
        thought = delta.get("reasoning") or delta.get("reasoning_content")
        if thought:
            choice.reasoning.append(thought)
        for fragment in delta.get("tool_calls") or ():
            call = choice.tool_calls.setdefault(
                int(fragment.get("index", 0)),
                {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
            )
            call["id"] = call["id"] or fragment.get("id")
            function = fragment.get("function") or {}
            call["function"]["name"] += function.get("name") or ""
            call["function"]["arguments"] += function.get("arguments") or ""

    @staticmethod
    def _add_logprobs(choice: _Choice, logprobs: dict[str, Any]) -> None:
        if choice.logprobs is None:
            choice.logprobs = {}
        for key, values in logprobs.items():
            if isinstance(values, list):
                choice.logprobs.setdefault(key, []).extend(values)

    def forwardable(self, chunk: dict[str, Any]) -> dict[str, Any]:
        """``chunk`` (already added) as a streaming requester should see it: a choice that
        made tool calls ends with ``tool_calls``, as in the assembled final."""
        choices = []
        for raw in chunk.get("choices") or ():
            choice = self._choices.get(int(raw.get("index", 0)))
            if raw.get("finish_reason") == "stop" and choice and choice.tool_calls:
                raw = {**raw, "finish_reason": "tool_calls"}
            choices.append(raw)
        return {**chunk, "choices": choices}

    def text(self, index: int = 0) -> str:
        choice = self._choices.get(index)
        return "".join(choice.text) if choice else ""

    def choices(self) -> list[dict[str, Any]]:
        """The assembled choices, in index order, in the non-streamed object's shape."""
        out = []
        for index in sorted(self._choices):
            c = self._choices[index]
            text = "".join(c.text)
            if self._chat:
                message: dict[str, Any] = {"role": "assistant", "content": text}
                finish = c.finish_reason
                if c.tool_calls:
                    message["tool_calls"] = [c.tool_calls[i] for i in sorted(c.tool_calls)]
                    message["content"] = text or None
                    # vLLM ends a named tool choice with "stop"; agents look for this.
                    finish = "tool_calls" if finish == "stop" else finish
                if c.reasoning:
                    message["reasoning_content"] = "".join(c.reasoning)
                out.append(
                    {
                        "index": index,
                        "message": message,
                        "logprobs": c.logprobs,
                        "finish_reason": finish,
                    }
                )
            else:
                logprobs = c.logprobs
                if logprobs is not None:
                    logprobs = {k: logprobs.get(k, []) for k in _LEGACY_LOGPROB_LISTS}
                out.append(
                    {
                        "index": index,
                        "text": text,
                        "logprobs": logprobs,
                        "finish_reason": c.finish_reason,
                    }
                )
        return out
