"""Issue 19: what an overnight user still tripped over (a judge outage kept forever, a finished model replaced,
prompts dropped by a repeated id, an export that waits in silence, ...). One test per defect, each failing on
the code before its fix."""

from __future__ import annotations

import json
from pathlib import Path

from judge.config import JudgeConfig
from judge.evaluate import evaluate
from test_judge_evaluate import fast_client, hash_judge, pregenerate, write_pairs


# 1. a judge outage is not kept forever -------------------------------------------------------------------------
def test_unparsed_verdicts_are_asked_again_once_the_judge_works(ollama_server, tmp_path: Path) -> None:
    pairs = write_pairs(tmp_path / "heldout.jsonl", n=4)
    cfg = JudgeConfig(policy="/m/p", reference="/m/r", prompts=str(pairs), judges=["ollama:judge"],
                      output_dir=str(tmp_path / "out"), attempts=1, n_boot=100)
    pregenerate(cfg, n=4)
    ollama_server.reply = hash_judge
    ollama_server.fail("malformed_json", times=-1)      # the outage: every verdict is cut-off JSON
    first = evaluate(cfg, clients={"ollama:judge": fast_client(ollama_server)})
    assert not first.complete
    ollama_server.clear_faults()
    again = evaluate(cfg, clients={"ollama:judge": fast_client(ollama_server)})
    assert again.complete, again.reason
    assert again.judges["ollama:judge"].diagnostics["unparsed"] == 0
    rows = [json.loads(line) for line in (tmp_path / "out" / "judgments.jsonl").read_text().splitlines()]
    assert [r["prompt_id"] for r in rows if not r["unparsed"]] == ["p0", "p1", "p2", "p3"]


def test_a_loop_whose_judge_has_gaps_does_not_exit_0_and_a_rerun_fills_them(tmp_path: Path, tiny_model_dir: Path,
                                                                             ollama_server, monkeypatch) -> None:
    from loop.run import main as run_main
    from ollama_server import scored_answer
    from test_loop import Args, scripted_reply, write_config

    outage = {"on": True}

    def reply(messages, fmt, options):
        if outage["on"] and isinstance(fmt, dict) and scored_answer(messages) is None:
            return '{"reason": "the proxy said 502'      # an overloaded judge: cut-off JSON
        return scripted_reply(messages, fmt, options)

    ollama_server.reply = reply
    monkeypatch.setenv("OLLAMA_HOST", ollama_server.url)
    cfg = write_config(tmp_path, tiny_model_dir, "attempts = 1\n")
    assert run_main(Args(cfg, "preflight.enabled=false")) == 1
    outage["on"] = False
    assert run_main(Args(cfg, "preflight.enabled=false")) == 0
    results = json.loads((tmp_path / "run" / "judge" / "results.json").read_text())
    assert results["status"] == "complete"


# 2. a new train does not silently replace a finished model ------------------------------------------------------
def test_a_new_train_refuses_a_folder_holding_a_finished_model(tiny_model_dir: Path, tmp_path: Path,
                                                               monkeypatch) -> None:
    import pytest

    from test_trainer import cfg_for, quiet
    from trainer.data import TrainError
    from trainer.dpo import train

    monkeypatch.setenv("PREFLOOP_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q{i}?", "chosen": f"Good answer {i}.",
                                        "rejected": f"Bad {i}."}) + "\n" for i in range(8)))
    out = tmp_path / "r"
    assert train(cfg_for(tiny_model_dir, data, out, max_steps=2), quiet()).complete
    assert not (out / "checkpoints").exists() or not any((out / "checkpoints").iterdir())
    before = (out / "metrics.jsonl").read_bytes()
    with pytest.raises(TrainError, match=r"holds a finished model .*--overwrite"):
        train(cfg_for(tiny_model_dir, data, out, max_steps=1, lr=5e-4), quiet())
    assert (out / "metrics.jsonl").read_bytes() == before
    assert train(cfg_for(tiny_model_dir, data, out, max_steps=1, lr=5e-4, overwrite=True), quiet()).complete


# 3. prompts whose id repeats ------------------------------------------------------------------------------------
def test_a_repeated_id_with_other_text_is_an_error_naming_the_lines(tmp_path: Path) -> None:
    import pytest

    from prefloop.sources import DataError, load_prompts

    src = tmp_path / "prompts.jsonl"
    rows = [{"id": "math", "prompt": f"What is {i} + {i}?"} for i in range(6)]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError) as err:
        load_prompts(src)
    text = str(err.value)
    assert f"{src}:2: field 'id'" in text and "line 1" in text and f"{src}:6:" in text


def test_a_repeated_id_with_the_same_text_is_a_duplicate_named_in_the_report(tmp_path: Path) -> None:
    from prefloop.sources import load_prompts

    src = tmp_path / "prompts.jsonl"
    rows = [{"id": "a", "prompt": "Hi?"}, {"id": "b", "prompt": "Bye?"}, {"id": "a", "prompt": "Hi?"}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records, report = load_prompts(src)
    assert [r.id for r in records] == ["a", "b"]
    assert sum(report.dropped.values()) == 1
    assert "line 3" in report.summary() and "'a'" in report.summary()


# 7. [label] is a section ---------------------------------------------------------------------------------------
def test_the_sections_a_config_may_hold_are_the_declared_ones(tmp_path: Path, capsys) -> None:
    import dataclasses

    from loop.cli import main
    from prefloop.config import SECTIONS

    assert {"run", "data", "generate", "split", "preflight", "train", "export", "judge", "label"} <= set(SECTIONS)
    assert all(dataclasses.is_dataclass(cls) for cls in dict(SECTIONS).values())
    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps({"prompt": "Hi?", "answer_a": "Hello!", "answer_b": "Go.", "label": "A"}) + "\n")
    cfg = tmp_path / "label.toml"
    cfg.write_text(f'[label]\nimport_labels = "{labels.as_posix()}"\nrater = "ana"\n')
    code = main(["label", "--config", str(cfg), "-o", str(tmp_path / "pairs.jsonl"), "-q"])
    assert code == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "pairs.jsonl").read_text())["chosen"] == "Hello!"
    (tmp_path / "typo.toml").write_text("[lable]\nrater = 'ana'\n")
    assert main(["label", "--config", str(tmp_path / "typo.toml"), "-o", str(tmp_path / "p2.jsonl")]) == 2
    assert "unknown section(s) [lable]" in capsys.readouterr().err


# 8. label --import F -o F ---------------------------------------------------------------------------------------
def test_label_refuses_to_write_its_pairs_over_the_file_it_imports(tmp_path: Path, capsys) -> None:
    import os

    from loop.cli import main

    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps({"prompt": "Hi?", "answer_a": "Hello!", "answer_b": "Go.", "label": "A"}) + "\n")
    before = labels.read_bytes()
    os.link(labels, tmp_path / "hard.jsonl")
    for out in (labels, tmp_path / "hard.jsonl"):
        assert main(["label", "--import", str(labels), "-o", str(out), "--rater", "ana", "-q"]) == 2
        assert "is the --import file" in capsys.readouterr().err
    assert labels.read_bytes() == before


# 11. a hard link to an output is the same lock ------------------------------------------------------------------
def test_a_hard_link_to_the_output_is_the_same_lock(tmp_path: Path) -> None:
    import os

    import pytest

    from prefloop.files import Busy, Lock

    real = tmp_path / "pairs.jsonl"
    real.write_text('{"id": "a"}\n')
    os.link(real, tmp_path / "other.jsonl")
    with Lock(real):
        with pytest.raises(Busy, match="another run"):
            with Lock(tmp_path / "other.jsonl"):
                pass
    with Lock(tmp_path / "other.jsonl"):   # released: free again
        pass


# 10. judge --validate FILE is validated as every other input ---------------------------------------------------
def test_judge_validate_refuses_a_bad_row_or_a_file_of_identical_pairs(ollama_server, tmp_path: Path,
                                                                       monkeypatch, capsys) -> None:
    from loop.cli import main

    pairs = write_pairs(tmp_path / "heldout.jsonl", n=2)
    cfg = JudgeConfig(policy="/m/p", reference="/m/r", prompts=str(pairs), judges=["ollama:judge"],
                      output_dir=str(tmp_path / "out"), n_boot=100)
    pregenerate(cfg, n=2)
    monkeypatch.setenv("OLLAMA_HOST", ollama_server.url)
    ollama_server.reply = hash_judge
    bad = tmp_path / "val-bad.jsonl"
    bad.write_text(json.dumps({"prompt": "Q?", "chosen": "Yes.", "rejected": "No."}) + "\n"
                   + json.dumps({"prompt": "Q2?", "chosen": "Yes."}) + "\n")
    same = tmp_path / "val-same.jsonl"
    same.write_text("".join(json.dumps({"prompt": f"Q{i}?", "chosen": "Same.", "rejected": "Same."}) + "\n"
                            for i in range(3)))
    for path, says in ((bad, f"{bad}:2: field 'rejected'"), (same, "chosen identical to rejected")):
        code = main(["judge", "--policy", "/m/p", "--reference", "/m/r", "--prompts", str(pairs), "--judge",
                     "ollama:judge", "-o", str(tmp_path / "out"), "--validate", str(path), "-q",
                     "--set", "n_boot=100"])
        err = capsys.readouterr().err
        assert code == 2 and says in err and str(path) in err, err


# 6. a corrupt or tampered reference cache is moved aside and recomputed -----------------------------------------
def test_a_corrupt_reference_cache_is_named_moved_aside_and_recomputed(tiny_model_dir: Path, tmp_path: Path,
                                                                       monkeypatch, capsys) -> None:
    import torch

    from test_trainer import cfg_for, losses, quiet
    from trainer.dpo import train

    monkeypatch.setenv("PREFLOOP_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q{i}?", "chosen": f"Good answer {i}.",
                                        "rejected": f"Bad {i}."}) + "\n" for i in range(8)))
    first = train(cfg_for(tiny_model_dir, data, tmp_path / "a", max_steps=2), quiet())
    [cache] = (tmp_path / "cache" / "refcache").glob("*.pt")
    good = cache.read_bytes()
    for n, broken in enumerate([good[: len(good) // 2], None]):
        if broken is None:          # tampered: a well-formed file whose entries are not log-probs
            torch.save({"entries": {"k": "not numbers"}}, cache)
        else:
            cache.write_bytes(broken)
        capsys.readouterr()
        again = train(cfg_for(tiny_model_dir, data, tmp_path / f"b{n}", max_steps=2), quiet())
        err = capsys.readouterr().err
        assert again.complete and str(cache) in err and "moved aside" in err
        assert losses(again.metrics_path) == losses(first.metrics_path)
        assert cache.read_bytes() != broken and len(list(cache.parent.glob(cache.name + ".bad*"))) == n + 1
