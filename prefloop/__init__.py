"""prefloop: preference pairs through Ollama, DPO on a small SFT model, held-out win rates from a swappable judge.

This package is the foundation the stages share: records and crash-safe JSONL, data sources, templates, settings
(``config``, ``flags``), fingerprints, whole-file writes and locks (``files``), the durable job runner, model
loading, the LLM clients (``llm/``), the stage-result type (``stage``) and the report renderer (``report``).

It may import nothing of ours above it (``generator``, ``trainer``, ``judge``, ``loop``): the stages depend on
it, never the reverse, and it knows no stage's schema. ``tests/test_layers.py`` checks every import.
"""

__version__ = "0.1.0"
