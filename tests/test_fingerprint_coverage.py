"""Every setting either changes its stage's fingerprint or is marked ``runtime``: a new or renamed field can never
be silently left out of the fingerprint (the hand-kept RUNTIME_ONLY list had gone stale: 8 of its 10 judge keys
named no field)."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest

from generator.config import STRATEGIES, GenerateConfig
from loop.config import load_loop_config
from loop.stages import stage_settings
from prefloop.config import ConfigError, is_runtime
from prefloop.fingerprint import fingerprint

QUICKSTART = Path(__file__).resolve().parents[1] / "data" / "quickstart.toml"
SECTION_OF = {"generate": "generate", "train": "train", "judge": "judge", "preflight": "preflight",
              "split": "split", "data": "split", "export": "export"}  # config attribute -> the stage whose fingerprint it feeds


def other_values(f: dataclasses.Field, value: Any, hint: Any) -> list[Any]:
    """Values different from ``value`` that a field of this type might accept, most plausible first."""
    choices = f.metadata.get("choices")
    if choices:
        return [c for c in choices if c != value]
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value + 7, max(1, value // 2)]
    if isinstance(value, float):
        return [value * 2 + 0.1, value / 2 + 0.01, value + 0.05]
    if isinstance(value, str):
        return [value + "x", "x"]
    if isinstance(value, list):
        return [value + ["local:other"], ["local:other"]]
    if value is None:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return {int: [5, 1], float: [0.5], str: ["x"]}.get(args[0] if args else str, ["x"])
    return []


def changed(cfg: Any, name: str) -> list[Any]:
    """Copies of ``cfg`` with field ``name`` set to another accepted value."""
    f = next(f for f in dataclasses.fields(cfg) if f.name == name)
    hint = typing.get_type_hints(type(cfg))[name]
    out = []
    for value in other_values(f, getattr(cfg, name), hint):
        try:
            out.append(dataclasses.replace(cfg, **{name: value}))
        except (ConfigError, ValueError):
            continue
    return out


def loop_fields() -> list[tuple[str, str]]:
    cfg = load_loop_config(QUICKSTART)
    return [(attr, f.name) for attr in SECTION_OF for f in dataclasses.fields(getattr(cfg, attr))]


@pytest.mark.parametrize("attr, name", loop_fields())
def test_a_setting_changes_its_stage_fingerprint_unless_marked_runtime(attr: str, name: str) -> None:
    cfg = load_loop_config(QUICKSTART)
    section = getattr(cfg, attr)
    f = next(f for f in dataclasses.fields(section) if f.name == name)
    stage = SECTION_OF[attr]
    if attr == "train" and (name.startswith("lora_") or name == "qlora") and name != "lora_r":
        section = dataclasses.replace(section, lora_r=16)  # LoRA settings only mean something with LoRA on
        cfg = dataclasses.replace(cfg, train=section)
    before = fingerprint(stage_settings(cfg)[stage])
    variants = changed(section, name)
    if attr == "generate" and name != "strategy":  # what shapes a pair depends on the strategy: try them all
        if name != "model":  # a served writer, so that contrast (writer vs SFT model) is a valid base
            section = dataclasses.replace(section, model="ollama:writer")
            variants = changed(section, name)
        def under(c: GenerateConfig, s: str) -> GenerateConfig | None:
            try:
                return dataclasses.replace(c, strategy=s, **({} if name == "sft_model" else {"sft_model": "local:sft"}))
            except (ConfigError, ValueError):
                return None

        moved = any((b := under(section, s)) is not None and (v := under(v0, s)) is not None
                    and b.identity() != v.identity() for v0 in variants for s in STRATEGIES)
    else:
        moved = any(fingerprint(stage_settings(dataclasses.replace(cfg, **{attr: v}))[stage]) != before
                    for v in variants)
    if is_runtime(f):
        assert not moved, f"[{attr}] {name} is marked runtime but changes the {stage} fingerprint"
    else:
        assert variants, f"[{attr}] {name}: the test found no other value to try; teach other_values() one"
        assert moved, (f"[{attr}] {name} changes no fingerprint: add it to what decides the {stage} stage's "
                       f"outputs, or mark it runtime=True if it only changes how the stage runs")


def test_generate_identity_ignores_runtime_settings() -> None:
    a = GenerateConfig(model="ollama:m", concurrency=2, timeout_s=5, fsync=False)
    b = GenerateConfig(model="ollama:m", concurrency=32, timeout_s=900, fsync=True, quiet=True)
    assert a.identity() == b.identity()
