"""Judges that need no server (issue 17): ``python:MODULE:FUNCTION`` and ``reward:PATH`` go through the same
validation on known pairs, statistics, cache and report as a model judge, and are cached per judgment."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import pytest

from judge.config import JudgeConfig
from judge.evaluate import evaluate
from judge.results import JudgeResults
from prefloop.llm.base import parse_spec
from test_judge_evaluate import pregenerate

MARKER_JUDGES = '''
CALLS = []

def prefers_marker(prompt, answer):
    """Score: 1 when the answer holds the marker word, else 0 (shorter breaks nothing: equal scores tie)."""
    CALLS.append((prompt, answer))
    return float("please" in answer.lower())

def prob_marker(prompt, a, b):
    CALLS.append((prompt, a, b))
    has_a, has_b = "please" in a.lower(), "please" in b.lower()
    return 0.5 if has_a == has_b else 0.9 if has_a else 0.1

def letters(prompt, a, b):
    return "A" if len(a) < len(b) else "B" if len(b) < len(a) else "tie"

def declared(*args):
    return len(args[1])
declared.judge_kind = "score"

def unclear(*args):
    return 1.0
'''
_names = itertools.count()


@pytest.fixture()
def judges_module(tmp_path: Path, monkeypatch) -> str:
    """A judges module in the current folder, under a fresh name (imports are cached per process)."""
    name = f"marker_judges_{next(_names)}"
    (tmp_path / f"{name}.py").write_text(MARKER_JUDGES)
    monkeypatch.chdir(tmp_path)
    yield name
    sys.modules.pop(name, None)


def write_answers(cfg: JudgeConfig, policy: list[str], reference: list[str]) -> None:
    pregenerate(cfg, len(policy))
    out = Path(cfg.output_dir)
    for side, texts in (("policy", policy), ("reference", reference)):
        path = out / f"gen-{side}.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps({**r, "answer": t}) + "\n" for r, t in zip(rows, texts)))


def marker_case(tmp_path: Path, judge: str) -> tuple[JudgeConfig, list[str]]:
    from test_judge_evaluate import write_pairs

    pairs = write_pairs(tmp_path / "heldout.jsonl")
    validate = tmp_path / "known.jsonl"   # the better side holds the marker
    validate.write_text("".join(json.dumps({"id": f"v{i}", "prompt": f"Ask {i}", "chosen": f"Yes please {i}.",
                                            "rejected": f"No {i}."}) + "\n" for i in range(6)))
    cfg = JudgeConfig(policy="/m/p", reference="/m/r", prompts=str(pairs), judges=[judge], validate=str(validate),
                      output_dir=str(tmp_path / "out"), n_boot=300)
    policy = [f"Please, answer {i}." if i < 6 else f"Answer {i}." for i in range(8)]
    reference = [f"Answer {i}." if i != 0 else "Please, answer 0 too." for i in range(8)]
    write_answers(cfg, policy, reference)
    return cfg, ["tie"] + ["win"] * 5 + ["tie"] * 2


@pytest.mark.parametrize("function", ["prefers_marker", "prob_marker"])
def test_a_python_judge_is_validated_counted_reported_and_cached(tmp_path: Path, judges_module: str,
                                                                 function: str) -> None:
    judge = f"python:{judges_module}:{function}"
    cfg, outcomes = marker_case(tmp_path, judge)
    res = evaluate(cfg)
    assert res.complete
    head = res.headline
    assert (head.wins, head.ties, head.losses) == (outcomes.count("win"), outcomes.count("tie"), 0)
    assert head.ci_low <= head.win_rate <= head.ci_high
    checked = head.validation
    assert checked is not None and checked.n == 6 and checked.accuracy == 1.0
    assert head.diagnostics["position_consistency"] == 1.0
    stored = JudgeResults.read(Path(cfg.output_dir) / "results.json")
    assert stored.headline.win_rate == head.win_rate
    assert judge in (Path(cfg.output_dir) / "report.md").read_text()

    calls = len(sys.modules[judges_module].CALLS)
    (Path(cfg.output_dir) / "judgments.jsonl").unlink()          # judged again: every verdict from the cache
    (Path(cfg.output_dir) / "validation.jsonl").unlink()
    again = evaluate(cfg)
    assert len(sys.modules[judges_module].CALLS) == calls and again.headline.win_rate == head.win_rate


def test_editing_the_python_judge_asks_it_again(tmp_path: Path, judges_module: str) -> None:
    from judge.kinds import make_direct

    first = make_direct(f"python:{judges_module}:prefers_marker").spec
    sys.modules.pop(judges_module)
    (tmp_path / f"{judges_module}.py").write_text(MARKER_JUDGES + "\n# edited\n")
    assert make_direct(f"python:{judges_module}:prefers_marker").spec != first


def test_python_judge_kinds_by_arity_or_declaration(tmp_path: Path, judges_module: str) -> None:
    from judge.kinds import make_direct

    score = make_direct(f"python:{judges_module}:prefers_marker")
    assert score.pick("q", "no", "please").winner == "B" and score.score("q", "please") == 1.0
    prob = make_direct(f"python:{judges_module}:prob_marker")
    got = prob.pick("q", "please", "no")
    assert got.winner == "A" and got.logodds == pytest.approx(2.1972, abs=1e-3) and prob.score("q", "x") is None
    assert make_direct(f"python:{judges_module}:letters").pick("q", "ab", "a").winner == "B"
    assert make_direct(f"python:{judges_module}:declared").score("q", "abc") == 3.0
    with pytest.raises(ValueError, match="judge_kind"):
        make_direct(f"python:{judges_module}:unclear").check()
    with pytest.raises(ValueError, match="no function"):
        make_direct(f"python:{judges_module}:missing").check()
    with pytest.raises(ValueError, match="cannot import"):
        make_direct("python:no_such_module_here:f").check()


def test_a_missing_python_judge_stops_the_run_before_any_work(tmp_path: Path, tiny_model_dir: Path,
                                                              judges_module: str) -> None:
    from loop.checks import SetupError, check_run
    from loop.config import load_loop_config
    from test_loop import write_config

    cfg = load_loop_config(write_config(tmp_path, tiny_model_dir),
                           [f'judge.judges=["python:{judges_module}:nope"]', "preflight.enabled=false"])
    with pytest.raises(SetupError, match="nope"):
        check_run(cfg, {"judge"})
    ok = load_loop_config(write_config(tmp_path, tiny_model_dir),
                          [f'judge.judges=["python:{judges_module}:prefers_marker"]'])
    check_run(ok, {"judge"})


@pytest.fixture(scope="module")
def tiny_reward_dir(tmp_path_factory, tiny_model_dir: Path) -> Path:
    """A one-output sequence-classification head on the tiny Llama, built locally."""
    import torch
    from transformers import AutoTokenizer, LlamaForSequenceClassification

    folder = tmp_path_factory.mktemp("reward") / "rm"
    torch.manual_seed(0)
    model = LlamaForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    return folder


def test_a_reward_model_judges_by_its_rewards_with_the_margin_as_log_odds(tmp_path: Path, tiny_reward_dir: Path,
                                                                          tiny_model_dir: Path) -> None:
    from judge.kinds import make_direct

    rm = make_direct(f"reward:{tiny_reward_dir}")
    rm.check()
    a, b = rm.score("Name a color.", "Red."), rm.score("Name a color.", "I do not know, sorry.")
    assert a != b
    got = rm.pick("Name a color.", "Red.", "I do not know, sorry.")
    assert got.winner == ("A" if a > b else "B") and got.logodds == pytest.approx(a - b)
    assert rm.pick("Name a color.", "I do not know, sorry.", "Red.").winner == ("B" if a > b else "A")
    with pytest.raises(ValueError, match="not a reward model"):
        make_direct(f"reward:{tiny_model_dir}").check()
    with pytest.raises(ValueError, match="no config.json"):
        make_direct(f"reward:{tmp_path}").check()


def test_a_reward_judge_runs_through_evaluate(tmp_path: Path, tiny_reward_dir: Path) -> None:
    judge = f"reward:{tiny_reward_dir}"
    cfg, _ = marker_case(tmp_path, judge)
    res = evaluate(cfg)
    assert res.complete and res.headline.n == 8 and res.headline.validation.n == 6
    rows = [json.loads(x) for x in (Path(cfg.output_dir) / "judgments.jsonl").read_text().splitlines()]
    assert all(g["logodds"] is not None for r in rows if not r.get("identical") for g in r["games"])
    assert parse_spec(judge).kind == "reward"
