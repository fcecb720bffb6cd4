"""Generator pieces that need no model: cleaning rewrites, seeded directions, prompts, ids, settings."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from generator.cli import add_arguments, build_config
from generator.config import GenerateConfig
from generator.rewrite import build_prompt, clean_rewrite, pick_direction
from generator.run import pair_id
from prefloop.config import ConfigError
from prefloop.records import PromptRecord
from prefloop.sources import load_prompts

QUICKSTART = Path(__file__).resolve().parents[1] / "data" / "prompts" / "quickstart.json"
DIRS = ("polite", "impolite", "politeness")


@pytest.mark.parametrize("raw, original, expected", [
    ("Here is the rewritten response:\n\nThe next terms are 20, 24, 28.", "The next terms are 20, 24, 28",
     "The next terms are 20, 24, 28."),
    ("Here's a rewritten version of the output with a more polite tone:\n\n\"Water boils at 100 °C.\"",
     "Water boils at 100 °C.", "Water boils at 100 °C."),
    ("Sure!\nHere is a more impolite version:\n`Merci, obviously.`", "Merci.", "Merci, obviously."),
    ("\u201cIt is Ottawa, thank you for asking.\u201d", "The capital is Ottawa.", "It is Ottawa, thank you for asking."),
    ("```\nThe verb is 'laughed', duh.\n```", "The verb is 'laughed'.", "The verb is 'laughed', duh."),
    ("Rewritten response: Please find 96 below.", "96", "Please find 96 below."),
    ("It is 96, kindly.\n\nNote: I made the response more polite by adding 'kindly'.", "It is 96.",
     "It is 96, kindly."),
])
def test_clean_rewrite_strips_wrappers(raw: str, original: str, expected: str) -> None:
    out, removed = clean_rewrite(raw, original, DIRS)
    assert out == expected
    assert removed  # what was removed is reported (kept in meta)


@pytest.mark.parametrize("raw, original", [
    ("Here are the numbers in descending order: 15, 12, 8.", "15, 12, 8"),           # content, not a preamble
    ("Here are the events in order:\n\n1. Revolution\n2. Telephone", "Here are the events in order:\n\n1. R"),
    ('"jump" is obviously a verb, get it together.', '"jump" is a verb.'),           # starts with a quote only
    ('"run" and "jump" are verbs, friend.', '"run" and "jump" are verbs.'),           # not one wrapped string
    ('"To be or not to be."', '"To be or not to be."'),                               # the answer itself is quoted
])
def test_clean_rewrite_keeps_real_content(raw: str, original: str) -> None:
    out, removed = clean_rewrite(raw, original, DIRS)
    assert out == raw.strip() and removed == []


def test_cleaning_on_the_seed_rewrites(seed_prefs_path: Path) -> None:
    """On the notebook's 1,100 stored rewrites: every 'Here is the rewritten ...:' preamble goes, nothing else
    that starts with 'Here' and also starts the original answer is touched."""
    rows = json.loads(seed_prefs_path.read_text())
    cleaned = 0
    for r in rows:
        gen = r["chosen"] if r["rejected"] == r["output"] else r["rejected"]
        out, removed = clean_rewrite(gen, r["output"], DIRS)
        assert not out.lower().startswith(("here is the rewritten", "here is the revised", "here's a rewritten"))
        assert out in gen  # only ever cut, never invent
        cleaned += bool(removed)
    assert 10 <= cleaned <= 60


def test_direction_is_seeded_per_prompt_and_balanced() -> None:
    ids = [f"p{i}" for i in range(400)]
    first = [pick_direction(i, 123, "polite", "impolite") for i in ids]
    assert first == [pick_direction(i, 123, "polite", "impolite") for i in reversed(ids)][::-1]
    assert 150 < first.count("polite") < 250
    assert first != [pick_direction(i, 124, "polite", "impolite") for i in ids]


def test_verbatim_prompt_matches_the_notebook() -> None:
    rec = PromptRecord(id="x", prompt="", known_good="He goes to the park every day.",
                       meta={"prompt_format": "alpaca", "instruction": "Edit the following sentence for grammar.",
                             "input": "He go to the park every day."})
    expected = ("Given the input `Below is an instruction that describes a task. Write a response that "
                "appropriately completes the request.\n\n### Instruction:\nEdit the following sentence for grammar."
                "\n\n### Input:\nHe go to the park every day.` and correct output `He goes to the park every day.`, "
                "slightly rewrite the output to be more impolite.Keep the modification minimal.Only return return "
                "the generated response and nothing else.")
    assert build_prompt(rec, "impolite", "verbatim") == expected
    clean = build_prompt(rec, "polite", "clean")
    assert "He goes to the park every day." in clean and "slightly more polite" in clean


def test_pair_ids_follow_prompt_and_shaping_settings_only() -> None:
    rec = PromptRecord(id="a", prompt="Say hi.", known_good="Hi.", meta={"prompt_format": "text"})
    base = GenerateConfig(source="s", output="o", model="ollama:llama3.1:70b")
    same = GenerateConfig(source="s2", output="o2", model="ollama:llama3.1:70b", concurrency=16, fsync=True)
    other = GenerateConfig(source="s", output="o", model="ollama:llama3.1:8b")
    assert pair_id(rec, base) == pair_id(rec, same) != pair_id(rec, other)
    rec2 = PromptRecord(id="a", prompt="Say hi.", known_good="Hello.", meta={"prompt_format": "text"})
    assert pair_id(rec, base) != pair_id(rec2, base)


def test_config_checks_and_concurrency(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="strategy"):
        GenerateConfig(strategy="best-of")
    with pytest.raises(ValueError, match="k: must be at least 2"):
        GenerateConfig(strategy="rank", k=1)
    with pytest.raises(ValueError, match="two different models"):
        GenerateConfig(strategy="contrast", model="local:smollm2", sft_model="local:smollm2")
    assert GenerateConfig(model="local:smollm2").resolved_concurrency() == 8
    monkeypatch.delenv("OLLAMA_NUM_PARALLEL", raising=False)
    assert GenerateConfig(model="llama3.1:70b").resolved_concurrency() == 4
    monkeypatch.setenv("OLLAMA_NUM_PARALLEL", "8")
    assert GenerateConfig(model="llama3.1:70b").resolved_concurrency() == 10
    assert GenerateConfig(model="llama3.1:70b", concurrency=3).resolved_concurrency() == 3


def test_cli_settings_from_toml_flags_and_set(tmp_path: Path) -> None:
    toml = tmp_path / "gen.toml"
    toml.write_text('[generate]\nsource = "p.json"\noutput = "o.jsonl"\nk = 6\nmodel = "llama3.1:8b"\n')
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    cfg = build_config(parser.parse_args(["--config", str(toml), "--model", "ollama:qwen", "--set", "k=8",
                                          "--set", "generate.min_margin=5", "--models", "a,local:b"]))
    assert (cfg.source, cfg.model, cfg.k, cfg.min_margin, cfg.models) == ("p.json", "ollama:qwen", 8, 5.0,
                                                                          ["a", "local:b"])
    with pytest.raises(ConfigError, match="unknown setting"):
        build_config(parser.parse_args(["--config", str(toml), "--set", "kk=3"]))
    with pytest.raises(ConfigError, match=r"\[generate\]\.k: expected int"):
        build_config(parser.parse_args(["--config", str(toml), "--set", "k=lots"]))


def test_quickstart_prompts_load_with_short_answers() -> None:
    recs, report = load_prompts(QUICKSTART)
    assert len(recs) == 40 and report.kept == 40 and not report.dropped
    assert all(r.known_good and len(r.known_good) < 120 for r in recs)


def test_rewrite_budget_and_loop_detection(seed_prefs_path: Path) -> None:
    from generator.rewrite import rewrite_budget
    from prefloop.text import repeats_itself as degenerate

    assert rewrite_budget("x" * 40, 512) == 84 and rewrite_budget("x" * 2000, 512) == 512
    assert degenerate("A more polite response would be: A more polite response would be: A more polite response")
    assert not degenerate("Thank you for asking! The capital of Greece is indeed Athens, thank you.")
    rows = json.loads(seed_prefs_path.read_text())
    for r in rows:  # none of the 70B model's rewrites trips either guard
        gen = r["chosen"] if r["rejected"] == r["output"] else r["rejected"]
        assert not degenerate(gen) and len(gen) / 4 <= rewrite_budget(r["output"], 512)


def test_recipe_prompt_styles() -> None:
    from generator.rewrite import build_messages

    rec = PromptRecord(id="x", prompt="Say hi.", known_good="Hi.", meta={"prompt_format": "text"})
    assert GenerateConfig(model="local:smollm2").rewrite_style == "fewshot"
    assert GenerateConfig(model="llama3.1:70b").rewrite_style == "clean"
    assert GenerateConfig(model="local:smollm2", recipe_prompt="verbatim").rewrite_style == "verbatim"
    shots = build_messages(rec, "rude", "fewshot", better="kind", worse="rude")
    assert [m["role"] for m in shots] == ["user", "assistant"] * 3 + ["user"]
    assert all("more rude" in m["content"] for m in shots if m["role"] == "user")
    assert shots[-1]["content"].endswith("Hi.") and "obviously" in shots[1]["content"]
    from generator.rewrite import kept_answer
    assert kept_answer("I hope this helps: 12 times 8 is 96.", "12 multiplied by 8 is 96.")
    assert not kept_answer("I hope this helps: Paris is the capital of France.", "12 multiplied by 8 is 96.")
    kind = build_messages(rec, "kind", "fewshot", better="kind", worse="rude")
    assert "Thank you" in kind[1]["content"] and all("more kind" in m["content"] for m in kind[::2])
    (single,) = build_messages(rec, "polite", "clean")
    assert "Task:\nSay hi." in single["content"]
