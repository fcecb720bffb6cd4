"""A person as the judge: ``prefloop judge --judge human:NAME`` beside a model judge on the Ollama test server. The
person (driven headless on the real screen) quits half way, resumes, skips one prompt; their verdicts fold into
the same win rate as a model judge's, and the report measures the model judge against them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("textual")

from judge.answers import answer_settings, gen_options, local_spec  # noqa: E402
from judge.config import JudgeConfig  # noqa: E402
from judge.evaluate import evaluate  # noqa: E402
from judge.labels import LabelLog  # noqa: E402
from judge.results import JudgeResults  # noqa: E402
from judge.stats import GameRecord, against_person  # noqa: E402
from ollama_server import pairwise_answers  # noqa: E402
from prefloop.llm import make_client  # noqa: E402
from prefloop.llm.retry import RetryPolicy  # noqa: E402

N = 8


def answers_on_disk(cfg: JudgeConfig) -> dict[str, tuple[str, str]]:
    """Both models' answers as a finished generation leaves them: the policy's is the longer on even prompts."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    o = gen_options(cfg)
    texts = {f"p{i}": (f"Policy answer {i}" + (" with many more words" if i % 2 == 0 else ""),
                       f"Reference answer {i}" + ("" if i % 2 == 0 else " that goes on and on")) for i in range(N)}
    for k, (side, spec) in enumerate((("policy", local_spec(cfg.policy)), ("reference", local_spec(cfg.reference)))):
        settings = answer_settings(spec, o, cfg)
        rows = [{"id": pid, "answer": pair[k], "settings": settings} for pid, pair in texts.items()]
        (out / f"gen-{side}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return texts


def prompts_file(tmp_path: Path) -> Path:
    path = tmp_path / "heldout.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"Question {i}?"}) + "\n" for i in range(N)))
    return path


def longer_wins(messages: Any, fmt: Any, options: Any) -> str:
    a, b = pairwise_answers(messages)
    return json.dumps({"reason": "longer", "winner": "A" if len(a) > len(b) else "B"})


class ShorterPerson:
    """Prefers the shorter answer wherever it is shown; skips the prompts in ``skip``; stops after ``stop``."""

    def __init__(self, stop: int | None = None, skip: tuple[str, ...] = ()):
        self.stop, self.skip, self.seen = stop, skip, []

    async def __call__(self, app: Any) -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            while (shown := app.deck.current()) is not None and len(self.seen) != self.stop:
                self.seen.append(shown)
                if any(f"Question {i[1:]}?" == shown.prompt for i in self.skip):
                    await pilot.press("s")
                else:
                    await pilot.press("1" if len(shown.left) < len(shown.right) else "2")


def test_a_person_judges_beside_a_model_quits_resumes_and_calibrates_it(ollama_server: Any, tmp_path: Path) -> None:
    ollama_server.reply = longer_wins
    cfg = JudgeConfig(policy="/models/policy", reference="/models/ref", prompts=str(prompts_file(tmp_path)),
                      judges=["human:pat", "ollama:judge"], output_dir=str(tmp_path / "out"), n_boot=200)
    texts = answers_on_disk(cfg)
    judge = make_client("ollama:judge", host=ollama_server.url, retry=RetryPolicy(attempts=2, base_delay=0.01))

    first = ShorterPerson(stop=3)
    result = evaluate(cfg, clients={"human:pat": first, "ollama:judge": judge})
    assert result.interrupted and not (tmp_path / "out" / "results.json").exists()
    assert ollama_server.count("/api/chat") == 0          # the model judge waits for the person

    again = ShorterPerson(skip=("p5",))
    result = evaluate(cfg, clients={"human:pat": again, "ollama:judge": judge})
    assert result.complete and len(first.seen) + len(again.seen) == N     # nothing asked twice
    # the person's win rate: the policy wins where its answer is the shorter (odd prompts), p5 left out
    person = result.judges["human:pat"]
    odd = [i for i in range(N) if i % 2 and i != 5]
    assert (person.wins, person.losses, person.ties, person.n) == (len(odd), N // 2, 0, N - 1)
    assert person.diagnostics["skipped"] == 1
    model = result.judges["ollama:judge"]
    assert (model.wins, model.losses, model.n) == (N // 2, N // 2, N)
    # the model judge against the person: it always picks the longer answer, the person never does
    [cal] = result.calibration
    assert (cal.person, cal.judge, cal.n) == ("human:pat", "ollama:judge", N - 1)
    assert (cal.agreement, cal.longer_judge, cal.longer_person, cal.length_bias) == (0.0, 1.0, 0.0, 1.0)
    assert cal.position_bias == 0.0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Model judges against the person" in report and "skipped by the rater" in report
    assert JudgeResults.read(tmp_path / "out" / "results.json").calibration[0].length_bias == 1.0
    # blinded: the screen never names the models
    assert not any("/models/" in s.heading + s.prompt for s in first.seen + again.seen)
    assert {s.prompt for s in first.seen + again.seen} == {f"Question {i}?" for i in range(N)}
    assert {frozenset((s.left, s.right)) for s in first.seen + again.seen} == {frozenset(t) for t in texts.values()}


def test_against_person_counts_agreement_by_where_the_persons_pick_was_shown() -> None:
    """Worked by hand: the person picked A on p1 and p2, B on p3. The judge's games:
    p1: A first -> A (agrees, person's pick first); B first -> B (disagrees, person's pick second)
    p2: A first -> A (agrees, first);              B first -> A (agrees, second)
    p3: A first -> A (disagrees, second);          B first -> tie (not decisive, left out)
    agree_first = 2/2, agree_second = 1/3, position bias = 2/3. Lengths: A is longer on p1 and p3, equal on p2;
    the judge picked the longer in 2 of the 3 decisive games on p1/p3 (A, B, A -> longer, shorter, longer),
    the person picked the longer on p1 (A) but not on p3 (B): 1/2, so the length bias is 2/3 - 1/2."""
    person = {"p1": "A", "p2": "A", "p3": "B"}
    games = [GameRecord("p1", "A", "A", 20, 10), GameRecord("p1", "B", "B", 20, 10),
             GameRecord("p2", "A", "A", 10, 10), GameRecord("p2", "B", "A", 10, 10),
             GameRecord("p3", "A", "A", 30, 10), GameRecord("p3", "B", "tie", 30, 10),
             GameRecord("p9", "A", "A", 5, 1)]                     # a prompt the person did not decide
    got = against_person(person, games)
    assert got.n == 3
    assert got.agree_first == 1.0 and got.agree_second == pytest.approx(1 / 3)
    assert got.position_bias == pytest.approx(2 / 3)
    assert got.longer_judge == pytest.approx(2 / 3) and got.longer_person == 0.5
    assert got.length_bias == pytest.approx(2 / 3 - 1 / 2)


def test_a_loop_config_takes_a_person_as_a_judge() -> None:
    from loop.config import load_loop_config
    from loop.stages import preflight_judge

    quickstart = Path(__file__).resolve().parents[1] / "data" / "quickstart.toml"
    both = load_loop_config(quickstart, ['judge.judges=["human", "local:smollm2"]'])
    assert both.judges == ["human", "local:smollm2"]
    assert preflight_judge(both) == "local:smollm2"            # a person judges pairs, not 0-100 scores
    assert preflight_judge(load_loop_config(quickstart, ['judge.judges=["human:ana"]'])) is None


def test_a_human_judge_without_a_terminal_says_so_before_asking_anything(tmp_path: Path, monkeypatch: Any) -> None:
    from judge.label import NeedsTerminal

    monkeypatch.setattr("sys.stdin", open("/dev/null"))   # as in CI and `prefloop run` under nohup
    cfg = JudgeConfig(policy="/models/policy", reference="/models/ref", prompts=str(prompts_file(tmp_path)),
                      judges=["human"], output_dir=str(tmp_path / "out"), n_boot=50)
    answers_on_disk(cfg)
    with pytest.raises(NeedsTerminal, match="interactive terminal"):
        evaluate(cfg)
    assert LabelLog.read(tmp_path / "out" / "human-labels.jsonl").labels == []
