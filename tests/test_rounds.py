"""Rounds (issue 17): `[run] rounds = N` samples the trained model's own answers, ranks them with a judge that
needs no server, trains again from the trained model, judges each round against the SFT model and the previous
round, and stops when a round changes nothing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from loop.config import load_loop_config
from loop.rounds import (RoundRow, best_round, guard_pairs, prompt_slice, round_row, round_train_config,
                         stop_reason)
from loop.run import main
from test_loop import Args, scripted_reply, write_config

MARKER = '''
def score(prompt, answer):
    """Prefers answers holding the marker word; otherwise a little for variety, so samples rarely tie."""
    return 10.0 * ("please" in answer.lower()) + len(set(answer)) / 1000
'''


@pytest.fixture()
def rounds_setup(tmp_path: Path, tiny_model_dir: Path, ollama_server, monkeypatch):
    ollama_server.reply = scripted_reply
    monkeypatch.setenv("OLLAMA_HOST", ollama_server.url)
    (tmp_path / "marker_rounds.py").write_text(MARKER)
    monkeypatch.chdir(tmp_path)
    yield write_config(tmp_path, tiny_model_dir, extra="\n[rounds]\nsamples = 3\ntemperature = 1.0\n")
    sys.modules.pop("marker_rounds", None)


SETTINGS = ['judge.judges=["python:marker_rounds:score"]', "preflight.enabled=false", "judge.n_boot=100",
            "run.rounds=2"]


def test_a_round_that_changed_nothing_stops_the_run_and_round_one_stays_the_result(rounds_setup: Path) -> None:
    run = rounds_setup.parent / "run"
    # lr so small the round-2 model answers exactly as round 1's: every verdict against round 1 is a tie
    assert main(Args(rounds_setup, *SETTINGS, "train.lr=1e-12", "run.rounds=3")) == 0
    curve = json.loads((run / "rounds" / "curve.json").read_text())
    assert [r["round"] for r in curve["rounds"]] == [1, 2]       # round 3 never ran
    assert "does not beat round 1" in curve["stopped"] and curve["best"] == 1
    assert curve["rounds"][1]["vs_previous"][0] == 0.5
    pairs = [json.loads(x) for x in (run / "rounds" / "2" / "generate" / "pairs.jsonl").read_text().splitlines()]
    assert pairs and all(p["meta"]["round"] == 2 for p in pairs)
    assert all(p["meta"]["judge"] == "python:marker_rounds:score" for p in pairs)
    assert all(p["meta"]["model"] == [f"local:{run / 'train' / 'final'}"] for p in pairs)
    heldout = {json.loads(x)["prompt"] if isinstance(json.loads(x)["prompt"], str) else ""
               for x in (run / "split" / "heldout_prompts.jsonl").read_text().splitlines()}
    assert not {p["prompt"] for p in pairs} & heldout                # held-out prompts never reach a round
    report = (run / "report.md").read_text()
    assert report.index("Rounds") < report.index("Held-out win rate")

    state = json.loads((run / "state.json").read_text())
    assert state["stages"]["round2/train"]["status"] == "done"
    # a rerun with the same settings does nothing again; a changed [rounds] setting reruns round 2
    assert main(Args(rounds_setup, *SETTINGS, "train.lr=1e-12", "run.rounds=3")) == 0
    again = json.loads((run / "state.json").read_text())
    assert again["stages"]["round2/train"]["fingerprint"] == state["stages"]["round2/train"]["fingerprint"]
    assert main(Args(rounds_setup, *SETTINGS, "train.lr=1e-12", "run.rounds=3", "rounds.samples=2")) == 0
    changed = json.loads((run / "state.json").read_text())
    assert changed["stages"]["round2/generate"]["fingerprint"] != state["stages"]["round2/generate"]["fingerprint"]
    assert changed["stages"]["train"]["fingerprint"] == state["stages"]["train"]["fingerprint"]

    # round 2's reference: the round-1 model by default, the SFT model with reference = "sft" (only training reruns)
    def ref_model() -> str:
        return json.loads((run / "rounds" / "2" / "train" / "train_summary.json").read_text())["config"]["ref_model"]

    assert ref_model() == ""
    # round 2 trains on its sampled pairs through the opening guard (nothing to drop here: the same pairs)
    summary = json.loads((run / "rounds" / "2" / "train" / "train_summary.json").read_text())
    trained = run / "rounds" / "2" / "generate" / "pairs.trained.jsonl"
    assert summary["config"]["data"] == str(trained)
    assert trained.read_text() == (trained.parent / "pairs.jsonl").read_text()
    assert main(Args(rounds_setup, *SETTINGS, "train.lr=1e-12", "run.rounds=3", "rounds.samples=2",
                     'rounds.reference="sft"')) == 0
    sft = json.loads((run / "state.json").read_text())
    assert ref_model() == str(load_loop_config(rounds_setup).train.model)
    assert sft["stages"]["round2/generate"]["fingerprint"] == changed["stages"]["round2/generate"]["fingerprint"]
    assert sft["stages"]["round2/train"]["fingerprint"] != changed["stages"]["round2/train"]["fingerprint"]


def test_stop_rule_and_best_round() -> None:
    from loop.config import RoundsSection

    guard = RoundsSection()                                       # min_kept 0.95, max_stock 0.10
    one = RoundRow(1, "m1", [0.6, 0.55, 0.65], [0.6, 0.55, 0.65], kept=1.0)
    two = RoundRow(2, "m2", [0.7, 0.6, 0.8], [0.6, 0.52, 0.7], kept=0.99)
    three = RoundRow(3, "m3", [0.8, 0.7, 0.9], [0.6, 0.52, 0.7], kept=0.9)
    assert stop_reason(two, guard) is None
    assert "min_kept" in stop_reason(three, guard)
    assert "does not beat" in stop_reason(RoundRow(2, "m", [0.5] * 3, [0.5, 0.4, 0.6], kept=1.0), guard)
    assert best_round([one, two, three], guard).round == 2          # round 3 lost the skill
    # the seed's round 4: 89 % against the SFT model, by opening 27 % of its answers alike (the SFT model: 4 %)
    stock = RoundRow(3, "m3", [0.89, 0.8, 0.96], [0.74, 0.63, 0.84], kept=0.99, stock_share=0.27,
                     stock_opening="i d be happy", sft_stock_share=0.04)
    assert "stock phrase" in stop_reason(stock, guard) and "i d be happy" in stop_reason(stock, guard)
    assert best_round([one, two, stock], guard).round == 2        # round 3 bought its win with one phrase
    loose = RoundsSection(max_stock=0.3)
    assert stop_reason(stock, loose) is None and best_round([one, two, stock], loose).round == 3
    as_sft = RoundRow(3, "m3", [0.89, 0.8, 0.96], [0.74, 0.63, 0.84], kept=0.99, stock_share=0.27,
                      stock_opening="i m sorry for", sft_stock_share=0.40)   # no more alike than the SFT model's
    assert stop_reason(as_sft, guard) is None


def test_fresh_slices_are_disjoint_and_cover_the_training_prompts() -> None:
    prompts = list(range(10))
    slices = [prompt_slice(prompts, k, 4, "fresh", 0) for k in (2, 3, 4)]
    assert sorted(sum(slices, [])) == prompts and all(slices)
    assert prompt_slice(prompts, 3, 4, "all", 0) == prompts


def test_rounds_settings_are_checked(rounds_setup: Path) -> None:
    from prefloop.config import ConfigError

    with pytest.raises(ConfigError, match="rounds.samples"):
        load_loop_config(rounds_setup, ["rounds.samples=1"])
    with pytest.raises(ConfigError, match="rounds.pairing"):
        load_loop_config(rounds_setup, ['rounds.pairing="best"'])
    with pytest.raises(ConfigError, match="rounds.max_stock"):
        load_loop_config(rounds_setup, ["rounds.max_stock=2"])
    with pytest.raises(ConfigError, match="rounds.reference"):
        load_loop_config(rounds_setup, ['rounds.reference="policy"'])
    assert load_loop_config(rounds_setup, ['rounds.reference="sft"']).rounds.reference == "sft"
    assert load_loop_config(rounds_setup).run.rounds == 1          # default: today's loop


def test_later_rounds_train_at_their_own_learning_rate(rounds_setup: Path, tmp_path: Path) -> None:
    from prefloop.config import ConfigError

    base = load_loop_config(rounds_setup)
    t = round_train_config(base, "round1-model", tmp_path / "pairs.jsonl", tmp_path / "train")
    assert (t.lr, t.model, t.data, t.ref_model) == (base.train.lr, "round1-model", str(tmp_path / "pairs.jsonl"),
                                                    base.train.ref_model)
    cfg = load_loop_config(rounds_setup, ["rounds.lr=1e-5", 'rounds.reference="sft"'])
    t = round_train_config(cfg, "round1-model", tmp_path / "pairs.jsonl", tmp_path / "train")
    assert t.lr == 1e-5 != cfg.train.lr and t.ref_model == str(cfg.train.model)
    with pytest.raises(ConfigError, match="rounds.lr"):
        load_loop_config(rounds_setup, ["rounds.lr=-1"])


POLITE = '''
def score(prompt, answer):
    """Prefers answers holding the marker phrase."""
    return float("thank" in answer.lower())
'''


def test_round_two_beats_round_one_by_a_judge_with_a_known_preference(rounds_setup: Path, ollama_server) -> None:
    """Contrast rounds: the writer's answers (the test server's, all holding "Thank you") against the trained
    model's own; the python: judge prefers the marker, so a round that learned it more wins against the last.
    With [export] the trained models answer from the server, which runs their weights."""
    ollama_server.run_weights = True
    (rounds_setup.parent / "polite_rounds.py").write_text(POLITE)
    run = rounds_setup.parent / "run"
    # [export] ollama: the loop exports round 1, and the best round is exported under the same name at the end
    rounds_setup.write_text(rounds_setup.read_text() + '\n[export]\nollama = "tiny-run"\nquantize = "q8_0"\n')
    args = Args(rounds_setup, 'judge.judges=["python:polite_rounds:score"]', "preflight.enabled=false",
                "judge.n_boot=200", "run.rounds=2", 'rounds.pairing="contrast"', "rounds.temperature=0.0",
                'rounds.prompts="all"', "train.lr=3e-3", "train.max_steps=30",
                "rounds.max_stock=1.0")    # this judge wants exactly one phrase: its stock opening is the goal
    try:
        code = main(args)
    finally:
        sys.modules.pop("polite_rounds", None)
    assert code == 0
    curve = json.loads((run / "rounds" / "curve.json").read_text())
    print(json.dumps(curve, indent=1))
    rate, low, high = curve["rounds"][1]["vs_previous"]
    assert rate > 0.5 and low > 0.5

    def files(folder: Path) -> dict[str, str]:
        return json.loads((folder / "export.json").read_text())["files"]

    assert curve["best"] == 2 and curve["best_model"] == str(run / "rounds" / "2" / "train" / "final")
    served = ollama_server.created["tiny-run:latest"]["files"]
    assert served == files(run / "rounds" / "export") != files(run / "export" / "policy")
    creates = ollama_server.count("/api/create")
    try:
        assert main(args) == 0                                     # a rerun exports nothing again
    finally:
        sys.modules.pop("polite_rounds", None)
    assert ollama_server.count("/api/create") == creates


SLOW_MARKER = MARKER + '''
import time

def slow_score(prompt, answer):
    time.sleep(0.05)   # stretches the round's ranking and judging so a kill lands inside them
    return score(prompt, answer)
'''


def test_kill_9_in_each_stage_of_round_two_then_resume(rounds_setup: Path, tiny_model_dir: Path) -> None:
    import os
    import signal
    import subprocess
    import time

    root = Path(__file__).resolve().parents[1]
    (rounds_setup.parent / "marker_rounds.py").write_text(SLOW_MARKER)
    run = rounds_setup.parent / "run"
    args = [sys.executable, "-m", "prefloop", "run", str(rounds_setup),
            "--set", 'judge.judges=["python:marker_rounds:slow_score"]', "--set", "preflight.enabled=false",
            "--set", "judge.n_boot=100", "--set", "run.rounds=2", "--set", "train.max_steps=12",
            "--set", "train.save_every=1"]
    env = {**os.environ, "PYTHONPATH": f"{root}:{root / 'tests'}", "HF_HUB_OFFLINE": "1"}

    def status(stage: str) -> str | None:
        try:
            return json.loads((run / "state.json").read_text())["stages"].get(stage, {}).get("status")
        except (OSError, ValueError):
            return None

    killed = []
    for stage in ("round2/generate", "round2/train", "round2/judge", "round2/judge-previous"):
        if status(stage) == "done":
            continue  # an earlier kill's rerun finished it before we got there
        proc = subprocess.Popen(args, cwd=rounds_setup.parent, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        while proc.poll() is None and status(stage) != "running":
            time.sleep(0.02)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed.append(stage)
        proc.wait()
    assert len(killed) >= 3, killed
    done = subprocess.run(args, cwd=rounds_setup.parent, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    curve = json.loads((run / "rounds" / "curve.json").read_text())
    assert [r["round"] for r in curve["rounds"]] == [1, 2]
    pairs = [json.loads(x) for x in (run / "rounds" / "2" / "generate" / "pairs.jsonl").read_text().splitlines()]
    assert len({p["meta"]["source_id"] for p in pairs}) == len(pairs), "a pair written twice across kills"
    state = json.loads((run / "state.json").read_text())["stages"]
    assert all(state[s]["status"] == "done" for s in ("round2/generate", "round2/train", "round2/judge",
                                                       "round2/judge-previous"))
    # each killed stage was resumed under its fingerprint (its work kept, not moved aside and redone), and round 1
    # was never started again: the run picked up in the round and stage where it stopped
    assert all(state[s]["runs"] >= 2 for s in killed), {s: state[s]["runs"] for s in killed}
    assert all(state[s]["runs"] == 1 for s in ("generate", "split", "train", "judge"))
    assert not (run / "stale").exists()
    assert (run / "rounds" / "2" / "train" / "final" / "config.json").exists()


def test_a_rounds_judge_that_does_not_import_stops_the_run_before_any_work(rounds_setup: Path, capsys) -> None:
    run = rounds_setup.parent / "run"
    assert main(Args(rounds_setup, *SETTINGS, 'rounds.judge="python:no_such_judges:score"')) == 2
    assert "[rounds] judge" in capsys.readouterr().err and not (run / "generate").exists()
    assert main(Args(rounds_setup, *SETTINGS, 'judge.judges=["human"]')) == 2
    assert "rank pairing needs a judge" in capsys.readouterr().err


def test_with_export_each_round_is_created_on_the_server_and_the_server_samples_it(rounds_setup: Path,
                                                                                  ollama_server) -> None:
    """[export] ollama: each round's model is created on the server under a name of its own, round 2's samples
    are asked of the round-1 model there (each sample its own seed, at the round's temperature), and the
    verdicts ask the server for both sides. The server answers created models from their own weights."""
    import ollama

    ollama_server.run_weights = True
    run = rounds_setup.parent / "run"
    rounds_setup.write_text(rounds_setup.read_text() + '\n[export]\nollama = "tiny-run"\n')
    # the served tiny model answers every prompt with the same words, so every chosen answer opens alike: without
    # max_stock = 1 the opening guard rightly stops round 2 (test_a_round_that_only_teaches_an_opening_stops)
    settings = [*SETTINGS, "rounds.max_stock=1.0"]
    assert main(Args(rounds_setup, *settings)) == 0

    def files(folder: Path) -> dict[str, str]:
        return json.loads((folder / "export.json").read_text())["files"]

    made = ollama_server.created
    assert made["tiny-run-round1:latest"]["files"] == files(run / "rounds" / "1" / "export") \
        == files(run / "export" / "policy")                          # round 1's model: the one the loop trained
    assert made["tiny-run-round2:latest"]["files"] == files(run / "rounds" / "2" / "export") \
        != made["tiny-run-round1:latest"]["files"]

    asked = [b for b in ollama_server.bodies("/api/chat") if b["model"] == "tiny-run-round1"]
    prompts = (run / "rounds" / "2" / "prompts.jsonl").read_text().splitlines()
    sampling = [b for b in asked if b["options"].get("temperature") == 1.0]
    assert len(sampling) == 3 * len(prompts)                         # [rounds] samples = 3 per prompt
    assert {b["options"]["seed"] for b in sampling} == {2000, 2001, 2002}   # seed + 1000·k + i

    pairs = [json.loads(x) for x in (run / "rounds" / "2" / "generate" / "pairs.jsonl").read_text().splitlines()]
    sampler = f"ollama:tiny-run-round1@{ollama_server.url}"
    assert pairs and all(p["meta"]["round"] == 2 and p["meta"]["model"] == [sampler] and
                         p["meta"]["judge"] == "python:marker_rounds:score" for p in pairs)
    # the pair holds what the server's round-1 model answers: ask it again with the chosen sample's seed
    first = pairs[0]
    best = next(c for c in first["meta"]["candidates"] if c["text"] == first["chosen"])
    body = next(b for b in sampling if b["options"]["seed"] == best["seed"] and
                first["meta"]["instruction"] in b["messages"][-1]["content"])
    again = ollama.Client(host=ollama_server.url).chat(model="tiny-run-round1", messages=body["messages"],
                                                       options=body["options"])
    assert again.message.content.strip() == first["chosen"]

    # round 2's verdicts: the round-2 model against the SFT model's export and against round 1, all served
    answered = {b["model"] for b in ollama_server.bodies("/api/chat")}
    assert {"tiny-run-round2", "tiny-run-reference", "tiny-run-round1"} <= answered
    results = json.loads((run / "rounds" / "2" / "judge-previous" / "results.json").read_text())
    assert json.dumps(results).count(sampler) >= 1

    creates = ollama_server.count("/api/create")
    assert main(Args(rounds_setup, *settings)) == 0                   # a rerun creates nothing again
    assert ollama_server.count("/api/create") == creates


def test_pairs_that_teach_one_opening_are_dropped_before_the_round_trains(tmp_path: Path) -> None:
    """A judge that rewards "I'd be happy to help" picks it whenever a sample has it: pairs whose chosen answer
    opens so and whose rejected one does not train the phrase (round 4 on the seed collapsed onto it). Over
    max_stock of the chosen answers opening alike, with at most half as many rejected ones, those pairs are
    dropped; the sampled file stays as it was."""
    from judge.retention import taught_opening
    from prefloop.jsonl import read_jsonl, write_jsonl

    happy = "I'd be happy to help! "
    chosen = [happy + "Paris.", happy + "Four.", happy + "Blue.", "The answer is 7.", "Water boils at 100 C.",
              "Seven.", "Cats purr.", "Red.", "It is a verb.", "Two."]
    rejected = ["Paris, France.", "4", happy + "Blue!", "7", "100", "seven", "purr", "red", "verb", "2"]
    assert taught_opening(chosen, rejected, 0.10) == "i d be happy"      # 3 of 10 chosen, 1 rejected
    assert taught_opening(chosen, rejected, 0.30) is None               # 3 is not over 30 % of 10
    assert taught_opening(chosen, [happy + r for r in rejected[:2]] + rejected[2:], 0.10) is None  # 3 rejected > 3/2

    src = tmp_path / "pairs.jsonl"
    rows = [{"id": str(i), "prompt": f"q{i}", "chosen": c, "rejected": r, "meta": {}}
            for i, (c, r) in enumerate(zip(chosen, rejected))]
    write_jsonl(src, rows)
    before = src.read_bytes()
    out, phrase, dropped = guard_pairs(src, 0.10)
    assert (phrase, dropped) == ("i d be happy", 2)                      # pair 2 opens alike on both sides: kept
    assert [r["id"] for r in read_jsonl(out)] == ["2", "3", "4", "5", "6", "7", "8", "9"]
    assert src.read_bytes() == before
    out, phrase, dropped = guard_pairs(src, 1.0)                           # max_stock = 1 turns it off
    assert (phrase, dropped) == (None, 0) and len(list(read_jsonl(out))) == 10

    # the round's row (the report's rounds table, curve.json) says how many pairs trained and what the guard dropped
    folder = tmp_path / "run" / "rounds" / "2" / "generate"
    folder.mkdir(parents=True)
    write_jsonl(folder / "pairs.jsonl", rows)
    guard_pairs(folder / "pairs.jsonl", 0.10)
    row = round_row(tmp_path / "run", 2, "m")
    assert (row.pairs, row.dropped, row.dropped_opening) == (8, 2, "i d be happy")


def test_an_opening_the_judge_picks_beyond_chance_is_dropped_while_still_rare(tmp_path: Path) -> None:
    """Round 3 on the seed had "I'd be happy to help" on the chosen side of 7 of its 160 pairs and on no rejected
    side: 4 % of the chosen answers, under max_stock, yet round 4's answers opened with it 2.5 times as often as
    the SFT model's. Seven of seven on one side is a coin landing heads seven times (p = 1/128): a sign test over
    the pairs whose answers open differently catches it; three of three (p = 1/8) or 7 against 3 (p = 0.17) is
    chance, and max_stock = 1 still turns the guard off."""
    from judge.retention import taught_opening
    from judge.stats import sign_test
    from prefloop.jsonl import read_jsonl, write_jsonl

    assert sign_test(7, 0) == 1 / 128 and sign_test(3, 0) == 1 / 8 and abs(sign_test(7, 3) - 176 / 1024) < 1e-12
    happy = "I'd be happy to help! "
    plain = [f"Answer number {i} is {i * 3}." for i in range(160)]
    other = [f"{i * 3}, that is the answer." for i in range(160)]
    chosen = [happy + a if i < 7 else a for i, a in enumerate(plain)]
    assert taught_opening(chosen, other, 0.10) == "i d be happy"        # 7 of 160 chosen: 4 %, under 10 %
    three = [happy + a if i < 3 else a for i, a in enumerate(plain)]
    assert taught_opening(three, other, 0.10) is None
    rejected = [happy + a if 7 <= i < 10 else a for i, a in enumerate(other)]
    assert taught_opening(chosen, rejected, 0.10) is None                # 7 against 3
    assert taught_opening(chosen, other, 1.0) is None

    src = tmp_path / "pairs.jsonl"
    write_jsonl(src, [{"id": str(i), "prompt": f"q{i}", "chosen": c, "rejected": r, "meta": {}}
                      for i, (c, r) in enumerate(zip(chosen, other))])
    out, phrase, dropped = guard_pairs(src, 0.10)
    assert (phrase, dropped) == ("i d be happy", 7)
    assert [r["id"] for r in read_jsonl(out)] == [str(i) for i in range(7, 160)]


def test_a_round_that_only_teaches_an_opening_stops(rounds_setup: Path, ollama_server, capsys) -> None:
    """The served tiny model answers every prompt with the same words: each pair's chosen answer opens alike and
    its rejected one does not, so the guard leaves nothing to train on and the run stops at round 2, saying why,
    with round 1 its result."""
    ollama_server.run_weights = True
    run = rounds_setup.parent / "run"
    rounds_setup.write_text(rounds_setup.read_text() + '\n[export]\nollama = "tiny-run"\n')
    assert main(Args(rounds_setup, *SETTINGS)) != 0
    assert not (run / "rounds" / "2" / "train" / "final").exists()
    out = " ".join(capsys.readouterr().out.split())
    assert "round 2: every pair's chosen answer opens with" in out, out
