"""Small text checks shared by the strategies."""

from __future__ import annotations


def same_text(a: str, b: str) -> bool:
    """Identical up to case and whitespace: such a pair carries no preference signal."""
    return " ".join(a.split()).lower() == " ".join(b.split()).lower()
