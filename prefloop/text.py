"""Small checks on model text, shared by the generator (what to drop) and the reports (what to warn about)."""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+")


def same_text(a: str, b: str) -> bool:
    """Identical up to case and whitespace: such a pair carries no preference signal."""
    return " ".join(a.split()).lower() == " ".join(b.split()).lower()


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits, underscore); punctuation and spacing do not count."""
    return _WORD.findall(text.lower())


def repeats_itself(text: str, n: int = 4, times: int = 3) -> bool:
    """Text stuck in a loop: some run of ``n`` words appears ``times`` times or more. What a small model (or a
    policy pushed too far by DPO) does; none of the seed recipe's 70B rewrites does it."""
    seen: dict[tuple[str, ...], int] = {}
    tokens = words(text)
    for i in range(len(tokens) - n + 1):
        key = tuple(tokens[i:i + n])
        seen[key] = seen.get(key, 0) + 1
        if seen[key] >= times:
            return True
    return False
