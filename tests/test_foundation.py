"""Records, JSONL storage, data sources and config: the foundation every stage reads through."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefloop.config import ConfigError, apply_overrides, build
from prefloop.jsonl import JsonlAppender, iter_jsonl, read_jsonl
from prefloop.records import RecordError
from prefloop.sources import DataError, load_preferences, load_prompts
from prefloop.templates import alpaca_prompt


def test_seed_preferences_load_as_is(seed_prefs_path: Path) -> None:
    records, report = load_preferences(seed_prefs_path)
    assert report.dropped["chosen identical to rejected"] == 6
    assert len(records) == 1100 - 6
    first = records[0]
    assert first.prompt.startswith("Below is an instruction")
    assert first.prompt.endswith("### Response:\n")
    assert first.prompt_format == "alpaca"
    assert first.meta["instruction"] == "Evaluate the following phrase by transforming it into the spelling given."


def test_trl_standard_and_conversational(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    rows = [
        {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No."},
        {"prompt": [{"role": "user", "content": "Say hi."}],
         "chosen": [{"role": "assistant", "content": "Hello there!"}],
         "rejected": [{"role": "assistant", "content": "Go away."}]},
        {"chosen": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
         "rejected": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "5"}]},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    records, _ = load_preferences(path)
    assert [r.prompt_format for r in records] == ["text", "chat", "chat"]
    assert records[1].chosen == "Hello there!"
    assert records[2].prompt == [{"role": "user", "content": "2+2?"}]
    assert records[2].rejected == "5"


@pytest.mark.parametrize("line, field, problem", [
    ('{"prompt": "p", "chosen": "a"}', "rejected", "missing"),
    ('{"prompt": "p", "chosen": "", "rejected": "b"}', "chosen", "empty"),
    ('{"prompt": 3, "chosen": "a", "rejected": "b"}', "prompt", "expected a string"),
    ('{"prompt": "p", "chosen": "a", "rejected": "b"', None, "invalid JSON"),
])
def test_bad_records_name_file_line_field(tmp_path: Path, line: str, field: str | None, problem: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "ok", "chosen": "a", "rejected": "b"}\n' + line + "\n")
    with pytest.raises((DataError, RecordError)) as info:
        load_preferences(path)
    err = info.value.errors[0] if isinstance(info.value, DataError) else info.value
    assert err.source == str(path) and err.line == 2 and err.field == field
    assert problem in str(err)


def test_skip_bad_counts_and_keeps_good(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"prompt": "p1", "chosen": "a", "rejected": "b"}\n{"prompt": "p2"}\n'
                    '{"prompt": "p3", "chosen": "same", "rejected": "same"}\n')
    records, report = load_preferences(path, skip_bad=True)
    assert len(records) == 1 and len(report.errors) == 1 and report.dropped["chosen identical to rejected"] == 1


def test_non_utf8_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n')
    with pytest.raises(RecordError, match="UTF-8") as info:
        load_preferences(path)
    assert info.value.line == 1


def test_prompts_from_text_and_alpaca(tmp_path: Path) -> None:
    txt = tmp_path / "prompts.txt"
    txt.write_text("First prompt\n\nSecond prompt\n")
    prompts, _ = load_prompts(txt)
    assert [p.prompt for p in prompts] == ["First prompt", "Second prompt"]
    alp = tmp_path / "a.json"
    alp.write_text(json.dumps([{"instruction": "Add.", "input": "1+1", "output": "2"}]))
    (rec,), _ = load_prompts(alp)
    assert rec.prompt == alpaca_prompt("Add.", "1+1") and rec.known_good == "2"


def test_hf_dataset_folder(tmp_path: Path) -> None:
    import datasets

    ds = datasets.Dataset.from_list([{"prompt": "p", "chosen": "good", "rejected": "bad"}])
    ds.save_to_disk(str(tmp_path / "ds"))
    records, _ = load_preferences(tmp_path / "ds")
    assert records[0].chosen == "good"


def test_appender_repairs_cut_line_and_reader_skips_it(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"id": 1}\n{"id": 2}\n{"id": 3, "cho')  # a write cut short by a crash
    assert [o["id"] for o in read_jsonl(path)] == [1, 2]
    with JsonlAppender(path) as out:
        assert out.repaired_bytes == len(b'{"id": 3, "cho')
        out.append({"id": 3})
    assert [o["id"] for _, o in iter_jsonl(path, partial_tail_ok=False)] == [1, 2, 3]


def test_config_build_is_strict() -> None:
    from dataclasses import dataclass

    @dataclass
    class S:
        beta: float = 0.1
        steps: int = 10

    data = apply_overrides({"train": {"beta": 0.2}}, ["train.steps=5"])
    assert build(S, data["train"], "x.toml [train]") == S(beta=0.2, steps=5)
    with pytest.raises(ConfigError, match=r"x.toml \[train\]: unknown setting\(s\) betta"):
        build(S, {"betta": 1}, "x.toml [train]")
    with pytest.raises(ConfigError, match="steps"):
        build(S, {"steps": "many"}, "x.toml [train]")


def test_tiny_model_loads(tiny_model_dir: Path) -> None:
    from prefloop.models import load_model

    model, tok = load_model(str(tiny_model_dir))
    ids = tok("Hello world", return_tensors="pt").input_ids
    assert model(ids).logits.shape[-1] == len(tok)
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                   add_generation_prompt=True).endswith("<|im_start|>assistant\n")
