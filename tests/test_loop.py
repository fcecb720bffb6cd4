"""The whole loop in miniature: the Ollama-protocol test server writes the pairs and judges, a tiny Llama is the
SFT model that DPO trains. Checks the run folder, that a rerun skips every finished stage (no model call at all),
and that a changed training setting reruns training and judging but not generation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from judge.results import JudgeResults
from prefloop.fingerprint import RunState
from prefloop.jsonl import read_jsonl
from loop.config import SplitSection, load_loop_config
from loop.run import main
from loop.split import choose_heldout, split_key
from prefloop.config import ConfigError
from ollama_server import judged_blocks, pairwise_answers, scored_answer

PROMPTS = [
    {"instruction": f"Task {i}: name a colour that rhymes with {w}.", "input": "", "output": f"The answer is {w}."}
    for i, w in enumerate(["red", "blue", "green", "grey", "black", "white", "pink", "gold", "teal", "tan",
                           "navy", "lime"])
]



def scripted_reply(messages, format, options):  # noqa: A002 - the server's callback signature
    """A consistent fake judge and writer: rewrites by direction; prefers the polite answer, else the shorter (so
    it tells the held-out pairs' chosen side from the rejected one); scores 72, and 5 for another prompt's
    answer (the preflight's deliberately wrong one)."""
    text = messages[-1]["content"]
    scored = scored_answer(messages)
    if scored is not None:
        known = judged_blocks(messages).get("Correct Output")
        wrong = known is not None and scored.startswith("The answer is") and scored != known
        return "5" if wrong else "72"
    if isinstance(format, dict):
        a_text, b_text = pairwise_answers(messages)
        polite_a, polite_b = a_text.startswith("Thank you"), b_text.startswith("Thank you")
        if polite_a != polite_b:
            return json.dumps({"reason": "the polite one", "winner": "A" if polite_a else "B"})
        winner = "tie" if len(a_text) == len(b_text) else ("A" if len(a_text) < len(b_text) else "B")
        return json.dumps({"reason": "the shorter answer is clearer", "winner": winner})
    answer = text.split("Correct answer:\n", 1)[-1].split("\n\n", 1)[0] if "Correct answer:" in text else "Okay."
    if "more impolite" in text:
        return f"Ugh, fine. {answer}"
    return f"Thank you for asking! {answer}"


def write_config(tmp_path: Path, model_dir: Path, extra: str = "") -> Path:
    data = tmp_path / "prompts.json"
    data.write_text(json.dumps(PROMPTS))
    cfg = tmp_path / "loop.toml"
    cfg.write_text(f"""
[run]
output_dir = "{(tmp_path / 'run').as_posix()}"

[data]
prompts = "prompts.json"

[split]
heldout_fraction = 0.25

[generate]
model = "ollama:llama3.2:1b"
max_tokens = 64

[preflight]
prompts = 2
max_tokens = 12

[train]
model = "{model_dir.as_posix()}"
max_steps = 2
batch_size = 2
max_length = 256
save_every = 1
eval_every = 1
live = false

[judge]
judges = ["ollama:judge"]
max_tokens = 12
n_boot = 200
{extra}
""")
    return cfg


class Args:
    def __init__(self, config: Path, *overrides: str):
        self.config, self.overrides, self.output, self.report_only = str(config), list(overrides), None, False


def stage_fps(run: Path) -> dict[str, tuple[str, str, int]]:
    state = RunState(run)
    return {name: (rec.fingerprint, rec.status, rec.runs) for name, rec in state.stages.items()}


@pytest.fixture()
def server(ollama_server, monkeypatch):
    ollama_server.reply = scripted_reply
    monkeypatch.setenv("OLLAMA_HOST", ollama_server.url)
    return ollama_server


def test_loop_end_to_end_then_skip_then_rerun_only_what_changed(tmp_path, tiny_model_dir, server, capsys):
    cfg_path = write_config(tmp_path, tiny_model_dir)
    run = tmp_path / "run"
    assert main(Args(cfg_path)) == 0

    # outputs of every stage
    pairs = read_jsonl(run / "generate" / "pairs.jsonl")
    assert len(pairs) == len(PROMPTS)
    train_rows = read_jsonl(run / "split" / "train.jsonl")
    heldout = read_jsonl(run / "split" / "heldout_prompts.jsonl")
    assert len(heldout) == 4 and len(train_rows) == len(PROMPTS) - 4   # 25% of 12, raised to heldout_min
    held_keys = {split_key(r["prompt"]) for r in heldout}
    assert not held_keys & {split_key(r["prompt"]) for r in train_rows}   # held-out prompts never reach training
    assert all(r["known_good"] for r in heldout)                          # the dataset answer travels with them
    assert (run / "train" / "final" / "config.json").exists()
    metrics = read_jsonl(run / "train" / "metrics.jsonl")
    assert {m["split"] for m in metrics} == {"train", "eval"}
    results = JudgeResults.read(run / "judge" / "results.json")
    assert results.headline.n == 4 and results.judge == "ollama:judge"
    assert results.prompts.endswith("heldout_prompts.jsonl")
    preflight = json.loads((run / "preflight" / "summary.json").read_text())
    assert preflight["n"] == 2 and preflight["mean_known_good_score"] == pytest.approx(72.0)
    html = (run / "report.html").read_text()
    md = (run / "report.md").read_text()
    for text in ("Held-out win rate", "Preflight", "Generation", "Training", "side by side"):
        assert text in html and text in md
    assert "data:image/png;base64," in html and (run / "plots" / "training.png").exists()
    assert (run / "judge" / "win_rate.png").exists()
    # the headline leads: the judge validated on the held-out pairs, its win rate, the reward accuracy, the skill
    head = md.index("picks the known-better answer of")
    assert head < md.index("win rate (95% CI") < md.index("Held-out reward accuracy") < md.index("Skill:")
    assert results.headline.validation.n == len(read_jsonl(run / "split" / "heldout_pairs.jsonl"))
    assert results.retention.n == 4 and results.answer_formats == {"chat": 4}
    out = capsys.readouterr().out
    assert "held-out win rate" in out and "report.html" in out and "Skill:" in out
    assert "[judge] judges" not in out  # served models only: no advice to switch to them

    first = stage_fps(run)
    assert set(first) == {"generate", "split", "preflight", "train", "judge"}
    assert all(status == "done" for _, status, _ in first.values())

    # the same command again: nothing runs, no model is asked anything
    calls = server.count("/api/chat")
    assert main(Args(cfg_path)) == 0
    assert server.count("/api/chat") == calls
    assert stage_fps(run) == first
    assert capsys.readouterr().out.count("skipped") == 5

    # the report can be rewritten from the run folder alone
    args = Args(cfg_path)
    args.report_only = True
    (run / "report.md").unlink()
    assert main(args) == 0 and "Held-out win rate" in (run / "report.md").read_text()

    # a deleted output makes its stage incomplete: only that stage and the ones after it run again
    import shutil

    shutil.rmtree(run / "judge")
    assert main(Args(cfg_path)) == 0
    assert stage_fps(run)["judge"][2] == 2 and stage_fps(run)["train"] == first["train"]
    first = stage_fps(run)

    # a changed training setting: train and judge run again, generation, split and preflight do not
    gen_mtime = (run / "generate" / "pairs.jsonl").stat().st_mtime_ns
    assert main(Args(cfg_path, "train.beta=0.3")) == 0
    second = stage_fps(run)
    for name in ("generate", "split", "preflight"):
        assert second[name] == first[name]
    for name in ("train", "judge"):
        assert second[name][0] != first[name][0] and second[name][1] == "done"
    assert (run / "generate" / "pairs.jsonl").stat().st_mtime_ns == gen_mtime
    assert (run / "stale" / "train" / "train" / "final" / "config.json").exists()  # old model kept aside
    assert RunState(run).get("train").settings["beta"] == 0.3


def test_killed_training_resumes_from_checkpoint(tmp_path, tiny_model_dir, server, monkeypatch):
    """Interrupted after the step-2 checkpoint, the loop leaves training 'running'; the same command resumes it
    from that checkpoint instead of starting over, and skips the stages before it."""
    import trainer.loop as tloop

    cfg_path = write_config(tmp_path, tiny_model_dir)
    run = tmp_path / "run"
    original = tloop.save_checkpoint
    saved = []

    def save_then_die(out, step, *args, **kwargs):
        path = original(out, step, *args, **kwargs)
        saved.append(step)
        if step == 2:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(tloop, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        main(Args(cfg_path, "train.max_steps=4"))
    monkeypatch.setattr(tloop, "save_checkpoint", original)
    assert saved == [1, 2]
    before = stage_fps(run)
    assert before["train"][1] == "running" and "judge" not in before
    assert (run / "report.html").exists()  # a partial report is written even when stopped

    calls = server.count("/api/chat")
    assert main(Args(cfg_path, "train.max_steps=4")) == 0
    after = stage_fps(run)
    assert after["generate"] == before["generate"] and after["train"][0] == before["train"][0]
    assert after["train"][1:] == ("done", 2)
    summary = json.loads((run / "train" / "train_summary.json").read_text())
    assert summary["steps"] == 4
    rows = [r["step"] for r in read_jsonl(run / "train" / "metrics.jsonl") if r["split"] == "train"]
    assert rows == [1, 2, 3, 4]   # one log as if uninterrupted: steps 1-2 from the first run, 3-4 resumed
    # generation was not asked again: any new calls are the judge's
    assert all("Rewrite the answer" not in json.dumps(b) for b in server.bodies("/api/chat")[calls:])


def test_heldout_choice_is_deterministic_and_order_free():
    keys = [split_key(f"prompt {i}") for i in range(50)]
    cfg = SplitSection(heldout_fraction=0.2)
    chosen = choose_heldout(keys, cfg)
    assert len(chosen) == 10
    assert choose_heldout(list(reversed(keys)), cfg) == chosen
    assert choose_heldout(keys, SplitSection(heldout_fraction=0.2, seed=1)) != chosen
    assert len(choose_heldout(keys[:6], SplitSection(heldout_fraction=0.1, heldout_min=4))) == 4
    assert len(choose_heldout(keys, SplitSection(heldout_fraction=0.5, heldout_max=7))) == 7


def test_config_errors_name_the_key(tmp_path, tiny_model_dir):
    cfg_path = write_config(tmp_path, tiny_model_dir)
    with pytest.raises(ConfigError, match=r"\[train\].*bogus"):
        load_loop_config(cfg_path, ["train.bogus=1"])
    with pytest.raises(ConfigError, match=r"\[train\]\.data: set by `prefloop run`"):
        load_loop_config(cfg_path, ["train.data=x.jsonl"])
    with pytest.raises(ConfigError, match="unknown section"):
        load_loop_config(cfg_path, ["trian.beta=0.2"])
    with pytest.raises(ConfigError, match="heldout_fraction"):
        load_loop_config(cfg_path, ["split.heldout_fraction=1.5"])


def test_shipped_configs_load():
    root = Path(__file__).resolve().parents[1] / "data"
    quick = load_loop_config(root / "quickstart.toml")
    assert quick.generate.model == "local:smollm2" and quick.judges == ["local:smollm2"]
    assert Path(quick.data.prompts).exists()
    recipe = load_loop_config(root / "reference-recipe.toml")
    assert recipe.generate.model == "ollama:llama3.1:70b" and recipe.judges[0].startswith("ollama:llama3")


def test_missing_prompts_stop_with_a_clear_message(tmp_path, tiny_model_dir, capsys):
    cfg_path = write_config(tmp_path, tiny_model_dir)
    (tmp_path / "prompts.json").unlink()
    assert main(Args(cfg_path)) == 2   # a setup error: found before any stage ran
    err = capsys.readouterr().err
    assert "[data] prompts = " in err and "prompts.json" in err and "no such file" in err
    assert not (tmp_path / "run" / "generate").exists()


def test_loop_trains_the_objective_train_section_names(tmp_path, tiny_model_dir, server):
    """[train] objective = "kto": the loop's pairs become one desirable and one undesirable answer each, and the
    run records and reports that objective."""
    run = tmp_path / "run"
    assert main(Args(write_config(tmp_path, tiny_model_dir), "train.objective=kto")) == 0
    summary = json.loads((run / "train" / "train_summary.json").read_text())
    assert summary["objective"] == "kto" and summary["status"] == "complete"
    assert "kl" in read_jsonl(run / "train" / "metrics.jsonl")[0]
    assert RunState(run).get("train").settings["objective"] == "kto"
    assert "| objective | kto |" in (run / "report.md").read_text().replace("`", "")
