"""Shared test fixtures: a tiny Llama with a locally trained tokenizer, built once per test session."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SEED_DIR = Path(__file__).resolve().parents[2] / "shared" / "seed-data"
SEED_PREFS = SEED_DIR / "instruction-data-with-preference.json"
SEED_INSTRUCTIONS = SEED_DIR / "instruction-data.json"


def seed_texts(limit: int = 400) -> list[str]:
    """Text to train the tiny tokenizer on: the seed pairs when present, else a built-in sample."""
    if SEED_PREFS.exists():
        rows = json.loads(SEED_PREFS.read_text())[:limit]
        return [" ".join([r["instruction"], r.get("input", ""), r["chosen"], r["rejected"]]) for r in rows]
    return [f"Example sentence number {i} about cats, dogs, and the weather." for i in range(200)]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A loadable tiny Llama folder (hidden 64, 2 layers, 512-token BPE)."""
    from prefloop.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "model", seed_texts())


@pytest.fixture(scope="session")
def seed_prefs_path() -> Path:
    if not SEED_PREFS.exists():
        pytest.skip("../shared/seed-data is not beside this checkout")
    return SEED_PREFS


@pytest.fixture
def ollama_server():
    """A started Ollama-protocol test server (tests/ollama_server.py); set attributes, inject faults, read .log."""
    from ollama_server import OllamaServer  # tests/ is on sys.path (pytest rootdir-relative import)

    server = OllamaServer().start()
    try:
        yield server
    finally:
        server.stop()
