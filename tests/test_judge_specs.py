"""Model and judge specs are parsed once into a kind (issue 19 item 5; house review 3 §5): `prefloop run` with a
person among the judges checks only the judges that are served models, and a person is never sent to Ollama."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefloop.llm.base import parse_spec
from test_loop import write_config


@pytest.mark.parametrize("text,kind,model", [
    ("human", "human", ""), ("human:ana", "human", "ana"), ("llama3.1:70b", "ollama", "llama3.1:70b"),
    ("local:", "local", "smollm2"), ("python:my_judges:prefer", "python", "my_judges:prefer"),
    ("reward:/models/rm", "reward", "/models/rm"), ("openai:m@http://h/v1", "openai", "m"),
])
def test_a_spec_knows_its_kind_and_reads_back_as_written(text: str, kind: str, model: str) -> None:
    spec = parse_spec(text)
    assert (spec.kind, spec.model) == (kind, model)
    assert parse_spec(str(spec)) == spec
    assert spec.person == (kind == "human") and spec.served == (kind in ("ollama", "openai"))


def test_a_python_judge_spec_without_a_function_is_refused_with_the_form_to_write() -> None:
    with pytest.raises(ValueError, match="python:MODULE:FUNCTION"):
        parse_spec("python:my_judges")


def test_make_client_refuses_a_person() -> None:
    from prefloop.llm import make_client

    with pytest.raises(ValueError, match="human"):
        make_client("human:ana")


@pytest.mark.parametrize("judges", ['["human", "ollama:judge"]', '["human:ana"]', '["human"]'])
def test_run_checks_accept_a_person_among_the_judges(tmp_path: Path, tiny_model_dir: Path, ollama_server,
                                                     monkeypatch, judges: str) -> None:
    from loop.checks import check_run
    from loop.config import load_loop_config

    monkeypatch.setenv("OLLAMA_HOST", ollama_server.url)
    cfg = load_loop_config(write_config(tmp_path, tiny_model_dir), [f"judge.judges={judges}"])
    check_run(cfg, {"generate", "split", "preflight", "train", "judge"})   # raised "model 'human' is not in Ollama"
    asked = {b.get("model") for b in ollama_server.bodies("/api/show")}
    assert not any(str(m).startswith("human") for m in asked)
