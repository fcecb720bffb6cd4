"""Issue 9, items 7 and 12: a broken judge does not report a result, an echoing judge scores nothing, and Ctrl-C
in `prefloop judge` exits 130 leaving the last complete result in place."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from judge.config import JudgeConfig
from judge.evaluate import evaluate
from loop.cli import main
from test_judge_evaluate import fast_client, hash_judge, pregenerate, write_pairs

ROOT = Path(__file__).resolve().parents[1]


def test_below_the_parse_rate_the_judge_run_is_not_complete(ollama_server, tmp_path: Path, monkeypatch,
                                                            capsys) -> None:
    pairs = write_pairs(tmp_path / "heldout.jsonl", n=4)
    cfg = JudgeConfig(policy="/m/p", reference="/m/r", prompts=str(pairs), judges=["ollama:judge"],
                      output_dir=str(tmp_path / "out"), attempts=1, n_boot=100)
    pregenerate(cfg, n=4)
    ollama_server.reply = lambda m, f, o: "I like both of them."
    result = evaluate(cfg, clients={"ollama:judge": fast_client(ollama_server)})
    assert result.status == "failed" and "parsed" in result.reason and "80%" in result.reason

    monkeypatch.setenv("OLLAMA_HOST", ollama_server.url)
    code = main(["judge", "--policy", "/m/p", "--reference", "/m/r", "--prompts", str(pairs), "--judge",
                 "ollama:judge", "-o", str(tmp_path / "out"), "--attempts", "1", "-q"])
    out, err = capsys.readouterr()
    assert code == 1 and "50.0%" not in out and "parsed" in err   # no headline from a judge that said nothing


def test_rank_takes_no_score_from_an_echoing_judge(ollama_server, tmp_path: Path, monkeypatch) -> None:
    from generator.config import GenerateConfig
    from generator.run import generate

    monkeypatch.setenv("OLLAMA_HOST", ollama_server.url)
    ollama_server.add_model("judge:latest")
    # candidates differ by seed; the judge (asked under a schema) repeats the prompt back, numbers and all
    ollama_server.reply = lambda m, f, o: m[-1]["content"] if f else f"Answer number {o['seed']}."
    src = tmp_path / "prompts.jsonl"
    src.write_text(json.dumps({"prompt": "Say 3 things, from 1 to 100."}) + "\n")
    cfg = GenerateConfig(source=str(src), output=str(tmp_path / "pairs.jsonl"), model="ollama:llama3.1:70b",
                         strategy="rank", k=3, judge="ollama:judge", quiet=True)
    result = generate(cfg)
    assert result.written == 0 and result.dropped == {"fewer than 2 scored candidates": 1}


def test_ctrl_c_in_judge_exits_130_and_keeps_the_last_complete_result(ollama_server, tmp_path: Path) -> None:
    pairs = write_pairs(tmp_path / "heldout.jsonl", n=8)
    out = tmp_path / "out"
    cfg = JudgeConfig(policy="/m/p", reference="/m/r", prompts=str(pairs), judges=["ollama:judge"],
                      output_dir=str(out), n_boot=100, concurrency=1)
    pregenerate(cfg, n=8)
    ollama_server.reply = hash_judge
    assert evaluate(cfg, clients={"ollama:judge": fast_client(ollama_server)}).complete
    complete = (out / "results.json").read_bytes()

    (out / "judgments.jsonl").unlink()           # judge again, slowly, and interrupt it half way
    (out / "judge-cache.sqlite").unlink()
    ollama_server.latency = 0.3
    env = dict(os.environ, OLLAMA_HOST=ollama_server.url, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "prefloop", "judge", "--policy", "/m/p", "--reference", "/m/r",
                             "--prompts", str(pairs), "--judge", "ollama:judge", "-o", str(out), "--concurrency",
                             "1", "--set", "n_boot=100"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out / "judgments.jsonl").exists():
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert (out / "results.json").read_bytes() == complete
