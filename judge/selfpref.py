"""Self-preference: a judge tends to prefer text that reads like its own.

When the judge is the model (or a sibling of the model) that wrote the training pairs, a trained policy that
learned to imitate that model's style wins more often with that judge than people would agree with. We cannot
fix that, but we can say so: a warning in the console and in the report.

Family = the name without backend, path, tag, size and tuning suffixes, down to its letters and major version:
``ollama:llama3.1:70b`` and ``llama3.1:8b`` are ``llama3``; ``local:smollm2`` and ``SmolLM2-135M-Instruct`` are
``smollm2``; ``qwen2.5-coder:0.5b`` is ``qwen2``.
"""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import Any, Iterable

from prefloop.llm.base import parse_spec
from prefloop.models import EMBEDDED_ALIASES, EMBEDDED_NAME

META_KEYS = ("model", "generator_model", "generator", "served_model")


def model_name(spec: str, *, keep_tag: bool = False) -> str:
    """The bare model name of a spec: no backend, no base URL, no folder, and no Ollama tag unless ``keep_tag``
    (then a missing tag reads ``latest``, as Ollama does)."""
    text = spec.strip()
    try:
        parsed = parse_spec(text)
        text = parsed.model
    except ValueError:
        pass
    text = PurePath(text.rstrip("/")).name or text
    if text.lower().endswith(".gguf"):
        text = text[:-5]
    if text.lower() in EMBEDDED_ALIASES:
        text = EMBEDDED_NAME
    name, _, tag = text.lower().partition(":")
    return f"{name}:{tag or 'latest'}" if keep_tag else name


def model_family(spec: str) -> str:
    """Letters plus major version of the model's name (``llama3.1`` -> ``llama3``, ``gpt-4o`` -> ``gpt4``)."""
    name = model_name(spec)
    match = re.match(r"([a-z]+)[-_ ]?v?(\d*)", name)
    return (match.group(1) + match.group(2)) if match else name


def generator_models(records: Iterable[Any]) -> set[str]:
    """Models that wrote or ranked preference pairs, from their ``meta``: the generator's provenance
    (``settings.model``, ``settings.models``, ``settings.judge`` for ``rank``, ``served_model``) or a plain
    ``model`` key."""
    found: set[str] = set()

    def add(value: Any) -> None:
        if isinstance(value, str) and value.strip():
            found.add(value.strip())
        elif isinstance(value, (list, tuple)):
            for v in value:
                add(v)

    for rec in records:
        meta = getattr(rec, "meta", None) or {}
        for key in META_KEYS:
            add(meta.get(key))
        settings = meta.get("settings")
        if isinstance(settings, dict):
            for key in ("model", "models", "judge"):
                add(settings.get(key))
    return found


def self_preference_warnings(judges: Iterable[str], generators: Iterable[str],
                             role: str = "the model that generated the training pairs") -> list[str]:
    """One warning per judge that is, or is a sibling of, one of ``generators`` (``role`` says what they are)."""
    out = []
    gens = sorted(set(generators))
    for judge in judges:
        for gen in gens:
            if model_name(judge, keep_tag=True) == model_name(gen, keep_tag=True):
                out.append(f"judge {judge} is {role} ({gen}): it tends to prefer its own style, so the win rate "
                           "may be biased; use a judge from another family")
                break
            if model_family(judge) == model_family(gen):
                out.append(f"judge {judge} is from the same family ({model_family(judge)}) as {role} ({gen}): "
                           "self-preference may bias the win rate; use a judge from another family")
                break
    return out
