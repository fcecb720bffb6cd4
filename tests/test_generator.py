"""The generator end to end against the Ollama-protocol test server, through the real ``ollama`` client."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from generator.config import GenerateConfig
from generator.run import generate, pair_id, summary_path
from prefloop.llm import make_client
from prefloop.llm.retry import RetryPolicy
from prefloop.runner import sidecar
from prefloop.sources import load_preferences, load_prompts
from ollama_server import scored_answer

QUICKSTART = Path(__file__).resolve().parents[1] / "data" / "prompts" / "quickstart.json"
MODEL = "ollama:llama3.1:70b"
FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)


def rewriter(messages: list[dict[str, Any]], fmt: Any, options: dict[str, Any]) -> str:
    """A scripted big model: polite rewrites come with a preamble and quotes, impolite ones bare; the
    Ottawa answer comes back unchanged (an identical pair, to be dropped)."""
    text = messages[-1]["content"]
    answer = re.search(r"Correct answer:\n(.*?)\n\nRewrite", text, re.S).group(1)
    direction = re.search(r"slightly more (\w+)\.", text).group(1)
    if "Ottawa" in answer:
        return answer
    if direction == "polite":
        return f'Here is the rewritten response:\n\n"Kindly note: {answer}"'
    return f"{answer} Obviously."


def cfg_for(tmp_path: Path, **kw: Any) -> GenerateConfig:
    base = dict(source=str(QUICKSTART), output=str(tmp_path / "pairs.jsonl"), model=MODEL, concurrency=4,
                quiet=True, backoff_s=0.01, limit=16)
    base.update(kw)
    return GenerateConfig(**base)


def clients_for(server: Any, cfg: GenerateConfig, **kw: Any) -> dict[str, Any]:
    kw.setdefault("retry", FAST)
    kw.setdefault("timeout", 5.0)
    return {spec: make_client(spec, host=server.url, **kw) for spec in cfg.specs_used()}


def rows(path: Path) -> list[dict]:
    path = Path(path)
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def test_rewrite_pairs_cleaned_oriented_and_resumable(ollama_server: Any, tmp_path: Path) -> None:
    ollama_server.reply = rewriter
    cfg = cfg_for(tmp_path)
    summary = generate(cfg, clients=clients_for(ollama_server, cfg))
    prompts, _ = load_prompts(QUICKSTART)
    prompts = prompts[:16]
    pairs, report = load_preferences(cfg.output)
    assert summary.written == len(pairs) == 15 and summary.dropped == {"chosen identical to rejected": 1}
    assert summary.failed == 0 and report.kept == 15
    by_source = {p.meta["source_id"]: p for p in pairs}
    for rec in prompts:
        if "Ottawa" in rec.known_good:
            assert rec.id not in by_source
            continue
        pair = by_source[rec.id]
        assert pair.id == pair_id(rec, cfg) and pair.prompt == rec.prompt
        if pair.meta["direction"] == "polite":  # the rewrite is better: chosen, cleaned of preamble and quotes
            assert (pair.chosen, pair.rejected) == (f"Kindly note: {rec.known_good}", rec.known_good)
            assert pair.meta["cleaned"] and pair.meta["raw"].startswith("Here is")
        else:  # the original is better
            assert (pair.chosen, pair.rejected) == (rec.known_good, f"{rec.known_good} Obviously.")
        assert pair.meta["model"] == MODEL and pair.meta["strategy"] == "rewrite" and pair.meta["time"]
        assert pair.meta["settings"]["seed"] == 123 and pair.meta["prompt_format"] == "alpaca"
    directions = {p.meta["direction"] for p in pairs}
    assert directions == {"polite", "impolite"}
    saved = json.loads(summary_path(cfg.output).read_text())
    assert saved["written"] == 15 and saved["dropped"] == {"chosen identical to rejected": 1}
    sent = ollama_server.bodies("/api/chat")
    assert all(b["options"]["seed"] == 123 and b["options"]["temperature"] == 0 and b["options"]["num_ctx"] == 4096
               for b in sent)

    # a rerun asks nothing again (pairs and the drop are both remembered); more prompts only add theirs
    calls = ollama_server.count("/api/chat")
    again = generate(cfg, clients=clients_for(ollama_server, cfg))
    assert again.written == 0 and again.skipped_existing == 16 and ollama_server.count("/api/chat") == calls
    more = generate(cfg_for(tmp_path, limit=20), clients=clients_for(ollama_server, cfg))
    assert more.written == 4 and ollama_server.count("/api/chat") == calls + 4
    ids = [r["id"] for r in rows(cfg.output)]
    assert len(ids) == len(set(ids)) == 19


@pytest.mark.parametrize("kind, extra", [
    ("status", {"status": 503}), ("status", {"status": 500}), ("status", {"status": 429}),
    ("error_mid_stream", {"after_chunks": 1}), ("drop", {}), ("hang", {"seconds": 30}),
    ("garbage_line", {}),
])
def test_transient_faults_are_retried_to_success(ollama_server: Any, tmp_path: Path, kind: str, extra: dict) -> None:
    ollama_server.reply = rewriter
    ollama_server.fail(kind, times=3, **extra)
    cfg = cfg_for(tmp_path, limit=6, concurrency=2)
    summary = generate(cfg, clients=clients_for(ollama_server, cfg, timeout=0.5))
    assert summary.failed == 0 and summary.written + sum(summary.dropped.values()) == 6
    assert summary.run["retries"] >= 1  # counted (client retries reach the progress bar and the summary)
    assert len(rows(cfg.output)) == summary.written


def test_fatal_faults_are_recorded_then_retried_on_rerun(ollama_server: Any, tmp_path: Path) -> None:
    ollama_server.reply = rewriter
    ollama_server.fail("missing_model", times=2)
    ollama_server.fail("status", status=400, times=1, message="invalid options")
    cfg = cfg_for(tmp_path, limit=10, concurrency=1)
    first = generate(cfg, clients=clients_for(ollama_server, cfg))
    fails = rows(sidecar(cfg.output, "failures.jsonl"))
    assert first.failed == 3 and len(fails) == 3
    assert all(f["reason"] == "ServerFatal" and f["attempts"] == 1 for f in fails)  # never retried within the run
    assert sum("not found" in f["message"] for f in fails) == 2
    assert any("invalid options" in f["message"] for f in fails)

    second = generate(cfg, clients=clients_for(ollama_server, cfg))
    assert second.failed == 0 and second.written == 3 and second.run["retried_failures"] == 3
    assert not sidecar(cfg.output, "failures.jsonl").exists()
    pairs, _ = load_preferences(cfg.output)
    assert len(pairs) == 10 and len({p.id for p in pairs}) == 10


def test_server_down_stops_early_with_a_clear_error(ollama_server: Any, tmp_path: Path) -> None:
    from prefloop.llm.base import ServerFatal

    ollama_server.remove_model("llama3.1:70b")
    cfg = cfg_for(tmp_path)
    with pytest.raises(ServerFatal, match="ollama pull"):
        generate(cfg, clients=clients_for(ollama_server, cfg))
    assert not Path(cfg.output).exists() or not rows(cfg.output)


def test_failure_streak_aborts(ollama_server: Any, tmp_path: Path) -> None:
    ollama_server.reply = rewriter
    cfg = cfg_for(tmp_path, limit=16, concurrency=1, abort_after=3, max_attempts=1)
    clients = clients_for(ollama_server, cfg)
    ollama_server.fail("status", status=500, times=-1)
    summary = generate(cfg, clients=clients)
    assert summary.aborted and summary.failed == 3 and summary.written == 0


def ranker(messages: list[dict[str, Any]], fmt: Any, options: dict[str, Any]) -> str:
    """Candidates differ by seed; the judge scores them by a word in them. Prompt 'tie' gets equal scores,
    prompt 'close' gets scores 3 apart, prompt 'same' the same answer for every seed."""
    text = messages[-1]["content"]
    answer = scored_answer(messages)
    if answer is not None:
        if "[tie]" in answer:
            return '{"score": 50}'
        if "[close]" in answer:
            return json.dumps({"score": 60 + int(answer.split("#")[1])})
        value = {"great": 90, "fine": 60, "poor": 15}.get(answer.split()[0] if answer.split() else "", 40)
        return json.dumps({"score": value})
    tag = next((t for t in ("tie", "close", "same") if t in text), "")
    if tag == "same":
        return "great same answer"
    quality = ["great", "poor", "fine", "great"][options["seed"] - 123]
    return f"{quality} answer [{tag}] #{options['seed'] - 123}"


def test_rank_best_against_worst_with_ties_and_margins_dropped(ollama_server: Any, tmp_path: Path) -> None:
    ollama_server.reply = ranker
    src = tmp_path / "prompts.jsonl"
    src.write_text("\n".join(json.dumps({"prompt": p}) for p in ["Say hello.", "Explain tie.", "Explain close.",
                                                                   "Say the same."]) + "\n")
    cfg = cfg_for(tmp_path, source=str(src), strategy="rank", k=4, min_margin=10, judge="ollama:judge")
    summary = generate(cfg, clients=clients_for(ollama_server, cfg))
    pairs, _ = load_preferences(cfg.output)
    assert summary.written == 1 and summary.dropped == {"tie (all scores equal)": 1, "margin under 10": 1,
                                                        "fewer than 2 distinct candidates": 1}
    (pair,) = pairs
    assert pair.chosen.startswith("great") and pair.rejected.startswith("poor")
    assert (pair.meta["chosen_score"], pair.meta["rejected_score"], pair.meta["margin"]) == (90, 15, 75)
    cands = pair.meta["candidates"]
    assert len(cands) == 4 and sorted(c["score"] for c in cands) == [15, 60, 90, 90]
    assert {c["seed"] for c in cands} == {123, 124, 125, 126} and pair.meta["judge"] == "ollama:judge"
    judge_calls = [b for b in ollama_server.bodies("/api/chat") if b["model"] == "judge"]
    assert len(judge_calls) == 4 + 4 + 4  # hello, tie, close (the 'same' prompt needs no judge)
    dropped = {d["reason"]: d for d in rows(sidecar(cfg.output, "dropped.jsonl"))}
    assert len(dropped["margin under 10"]["candidates"]) == 4  # drops keep their candidates too
    # the round's cost, split: time with an answer in flight, and with a score in flight (each within the run's)
    assert set(summary.busy_s) == {"answer", "score"}
    assert all(0 < v <= summary.elapsed_s + 0.1 for v in summary.busy_s.values())


def test_busy_counts_overlapping_calls_once(monkeypatch: Any) -> None:
    """Busy time is wall time with at least one call in flight: calls that overlap are not counted twice."""
    from generator import run as gen_run

    clock = iter([0.0, 4.0, 10.0, 20.0])   # enter A at 0, leave A at 4 ... (B entered at 1 and left at 10 below)
    monkeypatch.setattr(gen_run.time, "perf_counter", lambda: next(clock))
    busy = gen_run.Busy()
    a, b = busy, busy
    a.__enter__()          # t=0: first in flight
    b.__enter__()          # no clock read: already busy
    a.__exit__()           # one still in flight: no clock read
    b.__exit__()           # t=4: idle; 4 s busy
    with busy:             # t=10 .. t=20
        pass
    assert busy.seconds == 14.0


def test_contrast_asks_both_models_and_drops_identical_answers(ollama_server: Any, tmp_path: Path) -> None:
    ollama_server.reply = lambda messages, fmt, options: f"echo: {messages[-1]['content']}"
    cfg = cfg_for(tmp_path, strategy="contrast", sft_model="ollama:llama3.2:1b", limit=5)
    summary = generate(cfg, clients=clients_for(ollama_server, cfg))
    assert summary.written == 0 and summary.dropped == {"chosen identical to rejected": 5}
    bodies = ollama_server.bodies("/api/chat")
    models = [b["model"] for b in bodies]
    assert models.count("llama3.1:70b") == 5 and models.count("llama3.2:1b") == 5
    # a served model gets the task as a user turn, not the Alpaca scaffolding
    assert all("### Instruction" not in b["messages"][-1]["content"] for b in bodies)


def test_changed_settings_are_flagged(ollama_server: Any, tmp_path: Path) -> None:
    import io

    from rich.console import Console

    from generator.run import other_settings

    ollama_server.reply = rewriter
    cfg = cfg_for(tmp_path, limit=2)
    generate(cfg, clients=clients_for(ollama_server, cfg))
    assert other_settings(cfg.output, cfg.identity()) is None
    with pytest.raises(ValueError, match="other settings.*--mix-settings"):   # refused unless asked for
        generate(cfg_for(tmp_path, limit=2, worse="rude"), clients=clients_for(ollama_server, cfg))
    changed = cfg_for(tmp_path, limit=2, worse="rude", mix_settings=True)
    buf = io.StringIO()
    generate(changed, console=Console(file=buf, width=300), clients=clients_for(ollama_server, changed))
    assert other_settings(cfg.output, changed.identity())["worse"] == "impolite"
    assert "other settings" in buf.getvalue() and "rude" in buf.getvalue()


def test_cut_off_and_looping_rewrites_are_dropped(ollama_server: Any, tmp_path: Path) -> None:
    def loopy(messages: list[dict[str, Any]], fmt: Any, options: dict[str, Any]) -> str:
        answer = re.search(r"Correct answer:\n(.*?)\n\nRewrite", messages[-1]["content"], re.S).group(1)
        if "Jupiter" in answer:
            return "word " * 400  # runs into num_predict: the server reports done_reason "length"
        if "5000 grams" in answer:
            return "Kindly note that, " * 5
        return answer + " Please."

    ollama_server.reply = loopy
    cfg = cfg_for(tmp_path, limit=3)
    summary = generate(cfg, clients=clients_for(ollama_server, cfg))
    assert summary.written == 1
    assert summary.dropped == {"rewrite cut off at its token budget": 1, "degenerate repetition": 1}
    (budget,) = {b["options"]["num_predict"] for b in ollama_server.bodies("/api/chat")
                 if "Jupiter" in b["messages"][-1]["content"]}
    assert budget == 64 + len("The largest planet in our solar system is Jupiter.") // 2


@pytest.mark.parametrize("kind", ["malformed_json", "schema_violation"])
def test_rank_survives_malformed_replies(ollama_server: Any, tmp_path: Path, kind: str) -> None:
    ollama_server.reply = ranker
    ollama_server.fail(kind, times=1)  # the first candidate comes back as broken JSON text
    src = tmp_path / "prompts.jsonl"
    src.write_text(json.dumps({"prompt": "Say hello."}) + "\n")
    cfg = cfg_for(tmp_path, source=str(src), strategy="rank", k=3, judge="ollama:judge", concurrency=1)
    summary = generate(cfg, clients=clients_for(ollama_server, cfg))
    assert summary.failed == 0
    pairs, _ = load_preferences(cfg.output) if summary.written else ([], None)
    dropped = rows(sidecar(cfg.output, "dropped.jsonl"))
    # a broken candidate is just a bad candidate: scored, kept in meta, and the pair still made
    assert summary.written == 1 and not dropped
    cands = pairs[0].meta["candidates"]
    assert len(cands) == 3 and sum(c["text"].startswith("{") for c in cands) == 1
    assert all(c["score"] is not None for c in cands)


def scorer(messages: list[dict[str, Any]], fmt: Any, options: dict[str, Any]) -> str:
    """Answers differ by seed; the judge scores them by their first word. A 'mute' answer gets a judge reply
    without a score (every time: dropped, not labelled)."""
    answer = scored_answer(messages)
    if answer is not None:
        if answer.startswith("mute"):
            return "I would rather not say."
        return json.dumps({"score": {"great": 90, "fine": 50, "poor": 15}[answer.split()[0]]})
    return ["great", "poor", "fine", "mute"][options["seed"] - 123] + f" answer #{options['seed'] - 123}"


def test_score_labels_each_answer_by_threshold_and_resumes_without_duplicates(ollama_server: Any,
                                                                             tmp_path: Path) -> None:
    from prefloop.sources import load_labelled

    ollama_server.reply = scorer
    src = tmp_path / "prompts.jsonl"
    src.write_text("\n".join(json.dumps({"prompt": p}) for p in ["Say hello.", "Say goodbye."]) + "\n")
    cfg = cfg_for(tmp_path, source=str(src), output=str(tmp_path / "labelled.jsonl"), strategy="score", k=4,
                  threshold=50, judge="ollama:judge")
    ollama_server.fail("status", status=500, times=-1)   # the server is down: nothing written, every job failed
    first = generate(cfg, clients=clients_for(ollama_server, cfg))
    assert first.written == 0 and not rows(cfg.output)
    ollama_server.clear_faults()
    summary = generate(cfg, clients=clients_for(ollama_server, cfg))
    assert summary.failed == 0 and summary.written == 6 and summary.dropped == {"no score from the judge": 2}
    assert summary.outputs == {"labelled": cfg.output}
    got, _ = load_labelled(cfg.output)
    assert len(got) == 6
    by_word = {(r.prompt, r.completion.split()[0]): r for r in got}
    for prompt in ("Say hello.", "Say goodbye."):
        # 90 and the threshold's own 50 are desirable; 15 is not
        assert [by_word[prompt, w].label for w in ("great", "fine", "poor")] == [True, True, False]
        assert [by_word[prompt, w].meta["score"] for w in ("great", "fine", "poor")] == [90, 50, 15]
    assert all(r.meta["strategy"] == "score" and r.meta["judge"] == "ollama:judge" for r in got)
    assert all(set(row) == {"id", "prompt", "completion", "label", "meta"} for row in rows(cfg.output))
    dropped = rows(sidecar(cfg.output, "dropped.jsonl"))
    assert {d["text"].split()[0] for d in dropped} == {"mute"} and all(d["judge"]["raw"] for d in dropped)
    from generator.report import add_generation_section
    from prefloop.report import Report

    report = Report("run")
    add_generation_section(report, cfg.output)
    assert re.search(r"(un)?desirable \(score \d+", report.to_markdown())   # the run report shows one answer

    calls = ollama_server.count("/api/chat")
    again = generate(cfg, clients=clients_for(ollama_server, cfg))   # nothing left to do: no call, no duplicate
    assert again.written == 0 and again.skipped_existing == 8 and ollama_server.count("/api/chat") == calls
    assert len(rows(cfg.output)) == 6

    stricter = cfg_for(tmp_path, source=str(src), output=str(tmp_path / "labelled.jsonl"), strategy="score", k=4,
                       threshold=60, judge="ollama:judge")
    with pytest.raises(ValueError, match="other settings"):         # another threshold is another labelling
        generate(stricter, clients=clients_for(ollama_server, stricter))


def test_prefloop_train_kto_reads_the_score_strategy_output(ollama_server: Any, tmp_path: Path,
                                                            tiny_model_dir: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    from loop.cli import main

    ollama_server.reply = scorer
    src = tmp_path / "prompts.jsonl"
    src.write_text("\n".join(json.dumps({"prompt": p}) for p in ["Say hello.", "Say goodbye."]) + "\n")
    cfg = cfg_for(tmp_path, source=str(src), output=str(tmp_path / "labelled.jsonl"), strategy="score", k=3,
                  threshold=60, judge="ollama:judge")
    assert generate(cfg, clients=clients_for(ollama_server, cfg)).written == 6
    out = tmp_path / "kto"
    rc = main(["train", "--objective", "kto", "--model", str(tiny_model_dir), "--data", cfg.output, "--output",
               str(out), "--max-steps", "1", "--batch-size", "4", "--no-live"])
    assert rc == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["objective"] == "kto"
    # great (90) is desirable; fine (50) and poor (15) are not, at threshold 60
    assert "6 kept (2 desirable, 4 undesirable)" in " ".join(capsys.readouterr().err.split())


def test_the_loop_refuses_scored_answers_for_an_objective_that_needs_pairs(tmp_path: Path,
                                                                          tiny_model_dir: Path) -> None:
    from loop.checks import SetupError, check_run
    from loop.config import load_loop_config
    from test_loop import write_config

    cfg = load_loop_config(write_config(tmp_path, tiny_model_dir), ['generate.strategy="score"'])
    with pytest.raises(SetupError, match=r"strategy = \"score\".*objective = 'dpo'.*kto"):
        check_run(cfg, {"train"})
    kto = load_loop_config(write_config(tmp_path, tiny_model_dir), ['generate.strategy="score"',
                                                                     'train.objective="kto"'])
    check_run(kto, {"train"})
