"""Issue 9, items 1, 5 and 6 in `prefloop run`: editing the prompts file generates only what is new; a broken edit
stops the run before anything is moved; two runs cannot share a run folder; a missing model or an unreachable
judge is found before the first stage does any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loop.run import main
from prefloop.files import Lock
from prefloop.jsonl import read_jsonl
from test_loop import PROMPTS, Args, scripted_reply, write_config


@pytest.fixture()
def server(ollama_server, monkeypatch):
    ollama_server.reply = scripted_reply
    monkeypatch.setenv("OLLAMA_HOST", ollama_server.url)
    return ollama_server


def rewrites(server) -> int:
    return sum("Rewrite the answer" in json.dumps(b) for b in server.bodies("/api/chat"))


def test_editing_the_prompts_file_generates_only_the_new_prompts(tmp_path: Path, tiny_model_dir: Path,
                                                                 server) -> None:
    cfg = write_config(tmp_path, tiny_model_dir)
    run, prompts_file = tmp_path / "run", tmp_path / "prompts.json"
    assert main(Args(cfg)) == 0
    assert rewrites(server) == len(PROMPTS)
    first_pairs = (run / "generate" / "pairs.jsonl").read_text()

    # one prompt more: one rewrite more, the finished pairs kept as they were, nothing moved aside
    more = PROMPTS + [{"instruction": "Task 99: name a colour that rhymes with bed.", "input": "",
                       "output": "The answer is red."}]
    prompts_file.write_text(json.dumps(more))
    assert main(Args(cfg)) == 0
    assert rewrites(server) == len(PROMPTS) + 1
    assert (run / "generate" / "pairs.jsonl").read_text().startswith(first_pairs)
    assert len(read_jsonl(run / "generate" / "pairs.jsonl")) == len(PROMPTS) + 1
    assert not (run / "stale" / "generate").exists()

    # a broken edit stops before anything is moved; restoring it byte for byte asks the model nothing
    good = prompts_file.read_bytes()
    prompts_file.write_text(good.decode()[:-20])
    tree = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    before = (run / "generate" / "pairs.jsonl").read_bytes()
    assert main(Args(cfg)) == 2
    assert (run / "generate" / "pairs.jsonl").read_bytes() == before
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == tree
    prompts_file.write_bytes(good)
    calls = server.count("/api/chat")
    assert main(Args(cfg)) == 0
    assert server.count("/api/chat") == calls

    # a removed prompt: no generation, and its pair leaves the split
    prompts_file.write_text(json.dumps(more[1:]))
    assert main(Args(cfg)) == 0
    assert rewrites(server) == len(PROMPTS) + 1
    split = read_jsonl(run / "split" / "train.jsonl") + read_jsonl(run / "split" / "heldout_pairs.jsonl")
    assert len(split) == len(more) - 1 and not any("Task 0:" in json.dumps(r) for r in split)


def test_two_runs_cannot_share_a_run_folder(tmp_path: Path, tiny_model_dir: Path, server, capsys) -> None:
    cfg = write_config(tmp_path, tiny_model_dir)
    (tmp_path / "run").mkdir()
    link = tmp_path / "also-run"
    link.symlink_to(tmp_path / "run")
    with Lock(link, folder=True):   # another run holds the folder, under another spelling of its path
        assert main(Args(cfg)) == 2
    assert "being written by another run" in capsys.readouterr().err
    assert server.count("/api/chat") == 0


def test_a_missing_model_or_judge_is_found_before_any_work(tmp_path: Path, tiny_model_dir: Path, server,
                                                          capsys) -> None:
    cfg = write_config(tmp_path, tiny_model_dir)
    missing = tmp_path / "no-such-model"
    assert main(Args(cfg, f"train.model={json.dumps(str(missing))}")) == 2
    err = capsys.readouterr().err
    assert "no-such-model" in err and "[train] model" in err
    assert server.count("/api/chat") == 0 and not (tmp_path / "run" / "generate").exists()

    assert main(Args(cfg, 'judge.judges=["ollama:not-pulled"]')) == 2
    err = capsys.readouterr().err
    assert "not-pulled" in err and "ollama pull" in err
    assert server.count("/api/chat") == 0

    (tmp_path / "bad.txt").write_text("no placeholders here")
    assert main(Args(cfg, f"judge.template={json.dumps(str(tmp_path / 'bad.txt'))}")) == 2
    assert "placeholder" in capsys.readouterr().err and server.count("/api/chat") == 0
