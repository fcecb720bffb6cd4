"""prefloop: preference pairs through Ollama, DPO on a small SFT model, held-out win rates from a swappable judge.

This package is the foundation the stages share: records and JSONL storage, data sources, templates, config,
LLM clients, model loading and the CLI. ``generator``, ``trainer`` and ``judge`` depend on it, never the reverse.
"""

__version__ = "0.1.0"
