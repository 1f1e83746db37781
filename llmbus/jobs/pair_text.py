"""The texts of a replay pair: what was asked, and how alike two answers are."""

from __future__ import annotations

import difflib
import re
from typing import Any


def words(text: str) -> list[str]:
    """Words and the spaces between them: the unit of similarity and of marked changes."""
    return re.split(r"(\s+)", text)


def text_similarity(a: str, b: str) -> float:
    """difflib's ratio over words (not the spaces between them: they would match in any two
    texts). Without autojunk: on texts over 200 words difflib would otherwise treat every
    frequent word as junk, and a one-word edit of a long answer would score near 0."""
    return difflib.SequenceMatcher(None, a.split(), b.split(), autojunk=False).ratio()


def prompt_text(messages: Any, params: dict[str, Any]) -> str:
    """What the model was asked, as text: a chat's messages one per line, or a legacy
    completion's prompt."""
    if messages:
        lines = []
        for m in messages:
            content = m.get("content")
            if isinstance(content, list):  # content parts: their text
                content = " ".join(str(part.get("text", "")) for part in content)
            lines.append(f"{m.get('role', '?')}: {content or ''}")
        return "\n".join(lines)
    prompt = params.get("prompt")
    return prompt if isinstance(prompt, str) else str(prompt or "")
