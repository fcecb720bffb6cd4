"""The run report shows what the judge found, cell for cell: a judge run writes its files with its own code, and
the run report built from the run folder must show an empty trained answer as empty, an unparsed verdict as
unparsed and a win as a win (the guessed-field-name report showed the model folder's path and "tie")."""

from __future__ import annotations

import json
import re
from pathlib import Path

from judge.config import JudgeConfig
from judge.answers import answer_settings, gen_options, local_spec
from judge.evaluate import evaluate
from loop.report import write_run_report
from ollama_server import pairwise_answers
from prefloop.llm import make_client
from prefloop.llm.retry import RetryPolicy

PROMPTS = {"p-empty": "Name a planet.", "p-garbled": "Name a river.", "p-win": "Name a mountain."}
POLICY = {"p-empty": "", "p-garbled": "The Nile.", "p-win": "GOOD: Mount Everest."}
REFERENCE = {"p-empty": "Mars.", "p-garbled": "The Amazon.", "p-win": "A mountain."}


def judge_reply(messages, fmt, options):  # noqa: ANN001, ANN201 - the test server's callback
    a, b = pairwise_answers(messages)
    if "river" in messages[-1]["content"]:
        return "I cannot decide, both are rivers."            # no verdict at all: unparsed
    winner = "A" if a.startswith("GOOD") else "B" if b.startswith("GOOD") else ("B" if not a else "A")
    return json.dumps({"reason": "scripted", "winner": winner})


def folder_with_judgments(tmp_path: Path, server) -> Path:  # noqa: ANN001
    run = tmp_path / "run"
    out = run / "judge"
    prompts = tmp_path / "heldout.jsonl"
    prompts.write_text("".join(json.dumps({"id": k, "prompt": v, "known_good": "Known."}) + "\n"
                               for k, v in PROMPTS.items()))
    cfg = JudgeConfig(policy="/m/p", reference="/m/r", prompts=str(prompts), judges=["ollama:judge"],
                      output_dir=str(out), n_boot=100, attempts=1, min_parse_rate=0.5)
    out.mkdir(parents=True)
    o = gen_options(cfg)
    for side, answers, model in (("policy", POLICY, cfg.policy), ("reference", REFERENCE, cfg.reference)):
        key = answer_settings(local_spec(model), o, cfg)
        (out / f"gen-{side}.jsonl").write_text("".join(json.dumps({"id": k, "answer": a, "settings": key}) + "\n"
                                                       for k, a in answers.items()))
    server.reply = judge_reply
    client = make_client("ollama:judge", host=server.url, retry=RetryPolicy(attempts=1))
    result = evaluate(cfg, clients={"ollama:judge": client})
    assert result.complete
    return run


def example_blocks(md: str) -> dict[str, str]:
    """The side-by-side example of each prompt, by prompt id, as Markdown text."""
    parts = re.split(r"^#### prompt ", md, flags=re.MULTILINE)[1:]
    return {p.split("\n", 1)[0].strip(): p for p in parts}


def fenced_after(block: str, label: str) -> str:
    """The text inside the fence that follows ``**label**``."""
    match = re.search(rf"\*\*{re.escape(label)}\*\*\n\n(`{{3,}})text\n(.*?)\n\1", block, re.DOTALL)
    assert match, f"no {label} in {block[:300]}"
    return match.group(2)


def test_run_report_cells_match_what_the_judge_wrote(tmp_path: Path, ollama_server) -> None:
    run = folder_with_judgments(tmp_path, ollama_server)
    _, md_path = write_run_report(run)
    blocks = example_blocks(md_path.read_text())
    assert set(blocks) == set(PROMPTS)

    empty = blocks["p-empty"]
    assert fenced_after(empty, "trained (DPO)") == "(empty answer)"      # not the model folder's path
    assert "/m/p" not in fenced_after(empty, "trained (DPO)")
    assert fenced_after(empty, "reference (SFT)") == "Mars."
    assert "ollama:judge: reference wins" in empty

    garbled = blocks["p-garbled"]
    assert "ollama:judge: unparsed" in garbled and ": tie" not in garbled  # not shown as a plain tie

    win = blocks["p-win"]
    assert fenced_after(win, "trained (DPO)") == "GOOD: Mount Everest."
    assert "ollama:judge: trained model wins" in win
    assert fenced_after(win, "known-good answer") == "Known."

    html = (run / "report.html").read_text()
    assert "<em>(empty answer)</em>" in html and "unparsed (counted as a tie)" in html

    # the headline table holds the judge's own numbers: a win, a tie (the unparsed one) and a loss of 3
    results = json.loads((run / "judge" / "results.json").read_text())["judges"]["ollama:judge"]
    assert (results["wins"], results["ties"], results["losses"]) == (1, 1, 1)
    row = next(line for line in md_path.read_text().splitlines() if line.startswith("| ollama:judge |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "50.0%" and cells[4:8] == ["1", "1", "1", "3"]
