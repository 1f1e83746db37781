"""``Redactor``: replaces personal data in text with typed placeholders (``[EMAIL]``, ...).

The audit trail stores, and the logs print, only redacted text; the model still sees the
original prompt. Detection is a safety net, not a guarantee: regexes find candidates, and
checksums (Luhn, ISO 13616 mod 97) or ``ipaddress`` confirm them where the format allows,
so that order numbers, dates and version strings are left alone.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Any

_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,31}")
# A pattern that matches "" would put a placeholder between every two characters; these
# probes catch the usual culprits (``a*``, ``\b``, ``$``), and redact() skips any other.
_EMPTY_PROBES = ("", "a", "A 0_-.@\n")

# Cards, IBANs and phones run only where 7 digits lie at most 3 characters apart: every card,
# real IBAN and phone shape has such a cluster; prose with a year or a version has none.
_SEVEN_DIGITS = re.compile(r"(?:\D*\d){7}")
_DIGIT_CLUSTER = re.compile(r"\d(?:\D{0,3}\d){6}")

_EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,63}(?![\w-])")

# A maximal run of digit groups (one space or dash between groups); cards are looked for
# inside it on group boundaries, so a card is never cut out of a longer number, and an
# expiry date or quantity next to it does not hide it. "+" starts a phone number instead;
# the lookahead spares short runs (years, amounts) a call into Python.
_DIGIT_RUN = re.compile(r"(?<![\w+])(?<!\d[ -])(?=[\d -]{13})\d+(?:[ -]\d+)*(?!\w)")
_DIGIT_GROUP = re.compile(r"\d+")
# The digits of a grouped IBAN whose BBAN starts with letters ("GB82 WEST 1234 ...") form a
# run of their own; they belong to the IBAN check, not the card one.
_IBAN_HEAD = re.compile(r"(?<!\w)[A-Z]{2}\d\d(?: ?[A-Z0-9]{4})* $", re.IGNORECASE)

_IBAN = re.compile(
    r"(?<!\w)[A-Z]{2}\d\d(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?!\w)", re.IGNORECASE
)

# Loose candidates, confirmed by ipaddress. The lookarounds keep "1.2.3.4.5", "v1.2.3.4"
# and "std::x" whole; two colons at least, so "12:30" is never a candidate.
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)")
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-F]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-F]{1,4})?(?![\w:]|\.\w)",
    re.IGNORECASE,
)

# Phone heuristic: a phone-like shape, then 7 to 15 digits in all (E.164 allows 15), and not
# a date. Shapes: "+" and digit groups, with an optional "(area)" group; "(area) number";
# North American 3-3-4 groups; a national trunk "0" followed by separated groups
# ("030 1234567", "020 7946 0958", "01 23 45 67 89"); a bare 10-11 digit "0[1-9]..." number.
# Plain digit runs (years, amounts, ids), "2026-11-27" and groups right after other digits
# fit none of them. Groups are split only at separators or parentheses: no backtracking
# blow-up, as no run of digits can be read in several ways.
_PHONE = re.compile(
    r"""(?<![\w+./-])(?<!\d\ )(?:
        \+\d+(?:[ .-]\d+|[ .-]?\(\d{1,4}\)[ .-]?\d+)*
      | \(\d{2,5}\)[ .-]?\d+(?:[ .-]\d+)*
      | \d{3}[ .-]\d{3}[ .-]\d{4}
      | 0\d{1,4}(?:[ /.-]\d{2,8}){1,4}
      | 0[1-9]\d{8,9}
    )(?!\w|[./-]\d)""",
    re.VERBOSE,
)
# Only the trunk-"0" shape can also read as a date ("01.02.2026", "05/06/24").
_DATE = re.compile(r"\d{1,2}([./-])\d{1,2}\1\d{2,4}")


def _luhn(digits: str) -> bool:
    doubled = (int(c) * (2 if i % 2 else 1) for i, c in enumerate(reversed(digits)))
    return sum(d - 9 if d > 9 else d for d in doubled) % 10 == 0


def _iban_valid(compact: str) -> bool:
    iban = compact.upper()
    if not 15 <= len(iban) <= 34:
        return False
    # ISO 13616: country and check digits move to the end, letters become 10..35.
    return int("".join(str(int(c, 36)) for c in iban[4:] + iban[:4])) % 97 == 1


def _redact_cards(text: str) -> str:
    def in_run(m: re.Match[str]) -> str:
        run = m.group()
        if _IBAN_HEAD.search(text, max(0, m.start() - 40), m.start()):
            return run
        groups = [(g.start(), g.end()) for g in _DIGIT_GROUP.finditer(run)]
        out: list[str] = []
        done = i = 0
        while i < len(groups):
            # Windows that start at group i and hold at most 19 digits, the longest first.
            ends: list[int] = []
            count = 0
            for j in range(i, len(groups)):
                count += groups[j][1] - groups[j][0]
                if count > 19:
                    break
                ends.append(j)
            for j in reversed(ends):
                window = run[groups[i][0] : groups[j][1]]
                digits = window.replace(" ", "").replace("-", "")
                # Cards are grouped with one kind of separator: "2026-11-27 4111 ..." is a
                # date followed by something else, not a card.
                separators = set(window) - set(digits)
                if len(digits) >= 13 and len(separators) <= 1 and _luhn(digits):
                    out += (run[done : groups[i][0]], "[CARD]")
                    done, i = groups[j][1], j
                    break
            i += 1
        return "".join(out) + run[done:]

    return _DIGIT_RUN.sub(in_run, text)


def _redact_iban(m: re.Match[str]) -> str:
    candidate = m.group()
    blocks = candidate.split(" ")
    # The last blocks may be a following word or number ("... 3000 from"): drop them.
    for k in range(len(blocks), 0, -1):
        if _iban_valid("".join(blocks[:k])):
            return "[IBAN]" + candidate[len(" ".join(blocks[:k])) :]
    return candidate


def _redact_ip(m: re.Match[str]) -> str:
    candidate = m.group()
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return candidate
    # "::" alone is the unspecified address, and far more often Haskell or C++ than an IP.
    return candidate if candidate == "::" else "[IP]"


def _redact_phone(m: re.Match[str]) -> str:
    candidate = m.group()
    digits = sum(c.isdigit() for c in candidate)
    return "[PHONE]" if 7 <= digits <= 15 and not _DATE.fullmatch(candidate) else candidate


def _custom_step(name: str, regex: str) -> Callable[[str], str]:
    if not _NAME.fullmatch(name):
        raise ValueError(f"redaction pattern {name!r}: the name must match [A-Z][A-Z0-9_]{{0,31}}")
    try:
        pattern = re.compile(regex)
    except re.error as exc:
        raise ValueError(f"redaction pattern {name!r}: invalid regex {regex!r}: {exc}") from None
    if any(m.end() == m.start() for probe in _EMPTY_PROBES for m in pattern.finditer(probe)):
        raise ValueError(f"redaction pattern {name!r}: regex {regex!r} matches the empty string")
    placeholder = f"[{name}]"

    def step(text: str) -> str:
        return pattern.sub(lambda m: placeholder if m.end() > m.start() else m.group(), text)

    return step


class Redactor:
    """Built-in detectors plus the deployment's own ``NAME -> regex`` patterns."""

    _BUILT_IN = ("CARD", "IBAN", "EMAIL", "IP", "PHONE")

    def __init__(self, custom: Mapping[str, str] | None = None) -> None:
        self._custom = tuple(
            (name, _custom_step(name, regex)) for name, regex in (custom or {}).items()
        )

    @property
    def kinds(self) -> tuple[str, ...]:
        """Placeholder names, in the order they are applied."""
        return tuple(name for name, _ in self._custom) + self._BUILT_IN

    def redact(self, text: str) -> str:
        for _, step in self._custom:
            text = step(text)
        # Checked after the custom patterns, whose placeholders may hold digits; the built-in
        # placeholders hold none, so no later step can create a cluster.
        digits = _SEVEN_DIGITS.match(text) is not None and _DIGIT_CLUSTER.search(text) is not None
        # Cards and IBANs go before phone numbers, which would otherwise eat their digits.
        if digits:
            text = _IBAN.sub(_redact_iban, _redact_cards(text))
        if "@" in text:
            text = _EMAIL.sub("[EMAIL]", text)
        # IPv6 first: "::ffff:192.0.2.1" is one address, not a prefix and an IPv4.
        if text.count(":") >= 2:
            text = _IPV6.sub(_redact_ip, text)
        if "." in text:
            text = _IPV4.sub(_redact_ip, text)
        return _PHONE.sub(_redact_phone, text) if digits else text

    def redact_json(self, value: Any) -> Any:
        """A copy of a JSON-like value with every string in it redacted; keys stay as they are."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {key: self.redact_json(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            items = [self.redact_json(item) for item in value]
            return items if isinstance(value, list) else tuple(items)
        return value
