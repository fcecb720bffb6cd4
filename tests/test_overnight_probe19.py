"""Issue 19: what an overnight user still tripped over (a judge outage kept forever, a finished model replaced,
prompts dropped by a repeated id, an export that waits in silence, ...). One test per defect, each failing on
the code before its fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
    assert sorted(r["prompt_id"] for r in rows if not r["unparsed"]) == ["p0", "p1", "p2", "p3"]


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


def test_labelled_answers_follow_the_same_id_rule(tmp_path: Path) -> None:
    """KTO's labelled rows (and pairs split into them) load by the same rule as prompts and pairs: a category-like
    id is an error naming the lines, a true repeat is a duplicate named in the report."""
    import pytest

    from prefloop.sources import DataError, load_labelled

    src = tmp_path / "labelled.jsonl"
    rows = [{"id": "good", "prompt": f"Q{i}?", "completion": f"A{i}.", "label": True} for i in range(4)]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError) as err:
        load_labelled(src)
    text = str(err.value)
    assert f"{src}:2: field 'id'" in text and "line 1" in text and f"{src}:4:" in text

    rows = [{"id": "a", "prompt": "Hi?", "completion": "Hello.", "label": True},
            {"id": "p", "prompt": "Bye?", "chosen": "Goodbye, friend.", "rejected": "Go away."},
            {"id": "a", "prompt": "Hi?", "completion": "Hello.", "label": True}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records, report = load_labelled(src)
    assert [r.id for r in records] == ["a", "p/chosen", "p/rejected"]
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


# 9. one exception tree, caught once at the command's top: one line naming the file and the fix -----------------
def test_every_user_facing_error_is_on_one_tree_and_keeps_its_old_base() -> None:
    from judge.label import NeedsTerminal
    from judge.prompts import TemplateError
    from loop.checks import SetupError
    from loop.stages import StageFailed
    from prefloop.config import ConfigError
    from prefloop.errors import BadInput, PrefloopError, RunFailed
    from prefloop.export import ExportError
    from prefloop.files import Busy
    from prefloop.llm.base import LLMError, ServerFatal
    from prefloop.llm.schema import SchemaError
    from prefloop.models import ModelNotFound
    from prefloop.records import RecordError
    from prefloop.sources import DataError
    from trainer.data import TrainError

    old = {ConfigError: ValueError, RecordError: ValueError, DataError: ValueError, SchemaError: ValueError,
           ExportError: ValueError, TemplateError: ValueError, LLMError: RuntimeError, Busy: RuntimeError,
           TrainError: RuntimeError, NeedsTerminal: RuntimeError, StageFailed: RuntimeError,
           SetupError: RuntimeError, ModelNotFound: FileNotFoundError}
    for cls, base in old.items():
        assert issubclass(cls, PrefloopError) and issubclass(cls, base), cls
    assert issubclass(ServerFatal, RunFailed) and issubclass(ConfigError, BadInput)
    assert (BadInput.exit_code, RunFailed.exit_code) == (2, 1)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_start_errors_are_one_line_naming_the_file_and_the_fix(tiny_model_dir: Path, tmp_path: Path, capsys,
                                                               monkeypatch) -> None:
    import shutil
    import subprocess

    from loop.cli import main
    from test_trainer_overnight import readonly

    monkeypatch.setenv("PREFLOOP_CACHE", str(tmp_path / "cache"))
    # run with a config that is not UTF-8, or a folder
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[run]\noutput_dir = "caf\xe9"\n')
    assert main(["run", str(bad)]) == 2
    assert str(bad) in (line := one_line_error(capsys)) and "UTF-8" in line
    assert main(["run", str(tmp_path)]) == 2
    assert str(tmp_path) in (line := one_line_error(capsys)) and "folder" in line
    # train --data an empty folder
    (tmp_path / "empty").mkdir()
    assert main(["train", "--data", str(tmp_path / "empty"), "--model", str(tiny_model_dir), "-o",
                 str(tmp_path / "t"), "--no-live", "-q"]) == 2
    assert str(tmp_path / "empty") in (line := one_line_error(capsys)) and "empty folder" in line
    # export of a truncated model.safetensors
    cut = tmp_path / "cut"
    shutil.copytree(tiny_model_dir, cut)
    weights = cut / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert main(["export", str(cut), "-o", str(tmp_path / "exp"), "-q"]) == 2
    assert str(cut) in (line := one_line_error(capsys)) and "model.safetensors" in line
    # run and export -o into a read-only folder
    locked = tmp_path / "ro"
    if readonly(locked):
        try:
            cfg = tmp_path / "loop.toml"
            cfg.write_text('[data]\nprompts = "p.jsonl"\n[train]\nmodel = "smollm2"\n')
            (tmp_path / "p.jsonl").write_text('{"prompt": "hi"}\n')
            assert main(["run", str(cfg), "-o", str(locked / "run")]) == 2
            assert str(locked / "run") in (line := one_line_error(capsys)) and "writable" in line
            assert main(["export", str(tiny_model_dir), "-o", str(locked / "exp"), "-q"]) == 2
            assert str(locked) in (line := one_line_error(capsys)) and "writable" in line
        finally:
            subprocess.run(["chattr", "-i", str(locked)], capture_output=True)
            locked.chmod(0o755)


def test_resume_changed_across_a_change_of_the_trained_weights_shape_is_one_line(tiny_model_dir: Path,
                                                                               tmp_path: Path, capsys,
                                                                               monkeypatch) -> None:
    from loop.cli import main

    monkeypatch.setenv("PREFLOOP_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q{i}?", "chosen": f"Good answer {i}.",
                                        "rejected": f"Bad {i}."}) + "\n" for i in range(8)))
    base = ["train", "--data", str(data), "--model", str(tiny_model_dir), "-o", str(tmp_path / "r"), "--no-live",
            "-q", "--save-every", "1"]
    assert main([*base, "--max-steps", "2", "--lora-r", "4"]) == 0
    capsys.readouterr()
    for change in (["--lora-r", "8"], ["--lora-r", "0"]):
        assert main([*base, "--max-steps", "4", *change, "--resume", "--resume-changed"]) == 2
        assert "lora_r cannot change" in one_line_error(capsys)


# 4. export to a server that accepts connections and never answers ----------------------------------------------
def test_export_to_a_hung_server_is_bounded_and_says_what_is_wrong(ollama_server, tiny_model_dir: Path,
                                                                   tmp_path: Path, monkeypatch, capsys) -> None:
    import threading

    import prefloop.llm.ollama_create as create
    from loop.cli import main

    monkeypatch.setattr(create, "SHORT_TIMEOUT_S", 0.3, raising=False)   # 20 s in use; the bound is the point
    ollama_server.fail("hang", endpoint="*", times=-1, seconds=3600)
    codes: list[int] = []
    run = threading.Thread(target=lambda: codes.append(main(
        ["export", str(tiny_model_dir), "--ollama", "mine", "--host", ollama_server.url, "-o",
         str(tmp_path / "exp"), "-q"])), daemon=True)
    run.start()
    run.join(60)                     # the old code waited 600 s x 3 on the first call
    ollama_server.clear_faults()
    assert codes == [2]
    line = one_line_error(capsys)
    assert ollama_server.url in line and "did not answer" in line and "restart it" in line
    assert not (tmp_path / "exp").exists()           # nothing written before the server answered


def test_export_with_the_host_down_exits_2_as_the_readme_says(tiny_model_dir: Path, tmp_path: Path,
                                                              capsys) -> None:
    import socket

    from loop.cli import main

    with socket.socket() as s:       # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main(["export", str(tiny_model_dir), "--ollama", "mine", "--host", f"http://127.0.0.1:{port}", "-o",
                 str(tmp_path / "exp"), "-q"])
    assert code == 2 and "ollama serve" in one_line_error(capsys)


# 12. the smaller ones ---------------------------------------------------------------------------------------------
def test_report_only_on_a_folder_that_is_no_run_refuses_and_writes_nothing(tmp_path: Path, tiny_model_dir: Path,
                                                                            capsys) -> None:
    from loop.cli import main
    from test_loop import write_config

    cfg = write_config(tmp_path, tiny_model_dir)
    assert main(["run", str(cfg), "--report-only", "-o", str(tmp_path / "rnu")]) == 2
    assert "not a run folder" in one_line_error(capsys)
    assert not (tmp_path / "rnu").exists()


def test_a_failed_stage_is_recorded_as_failed_not_running(tmp_path: Path, tiny_model_dir: Path) -> None:
    import pytest

    from loop.config import load_loop_config
    from loop.stages import Loop, StageFailed
    from prefloop.fingerprint import RunState
    from test_loop import write_config

    loop = Loop(load_loop_config(write_config(tmp_path, tiny_model_dir)))
    loop.run_dir.mkdir(parents=True)
    loop.settings["export"] = {}

    def work(decision: str):
        raise ConnectionError("the server went away")

    with pytest.raises(StageFailed):
        loop._stage("export", {}, ["export"], work)
    rec = RunState(loop.run_dir).stages["export"]
    assert rec.status == "failed" and "went away" in rec.info["reason"]


def test_standalone_judge_checks_its_template_and_judge_model_before_any_answer(ollama_server, tmp_path: Path,
                                                                               monkeypatch, capsys) -> None:
    from loop.cli import main

    monkeypatch.setenv("OLLAMA_HOST", ollama_server.url)
    pairs = write_pairs(tmp_path / "heldout.jsonl", n=2)
    base = ["judge", "--policy", str(tmp_path / "no-such-policy"), "--reference", str(tmp_path / "no-such-ref"),
            "--prompts", str(pairs), "-o", str(tmp_path / "out"), "-q"]
    assert main([*base, "--judge", "ollama:not-pulled-judge"]) == 2
    assert "not-pulled-judge" in one_line_error(capsys)          # the judge, not the policy's missing answers
    template = tmp_path / "judge.txt"
    template.write_text("Compare {prompt} and {answer_a}.\n")
    assert main([*base, "--judge", "ollama:judge", "--template", str(template)]) == 2
    assert str(template) in one_line_error(capsys)


def test_csv_import_names_real_lines_and_refuses_binary_empty_and_identical(tmp_path: Path) -> None:
    import pytest

    from judge.config import LabelConfig
    from judge.label import label
    from prefloop.sources import DataError

    def importing(path: Path) -> Any:
        return label(LabelConfig(import_labels=str(path), output=str(tmp_path / "pairs.jsonl"), rater="me"))

    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("prompt,answer_a,answer_b,label\nBye?,Ciao.,Later.,maybe\nHi?,Hello!,Go.,A\n")
    with pytest.raises(DataError, match=rf"{csv_file}:2: field 'label'"):   # the file's line 2, not data row 1
        importing(csv_file)
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"prompt,answer_a\n\xff\xfe\x00\x01garbage\n")
    with pytest.raises(DataError, match=str(binary)):
        importing(binary)
    empty = tmp_path / "empty.csv"
    empty.write_text("prompt,answer_a,answer_b,label\n")
    with pytest.raises(DataError, match=rf"{empty}.*no labels"):
        importing(empty)
    same = tmp_path / "same.csv"
    same.write_text("prompt,answer_a,answer_b,label\nHi?,Hello!,Hello!,A\n")
    with pytest.raises(DataError, match=rf"{same}:2: field 'answer_b'.*same"):
        importing(same)


def test_no_kept_share_from_a_reference_that_recalls_next_to_nothing() -> None:
    from judge.results import AnswerRow
    from judge.retention import retention

    known = ("Photosynthesis converts sunlight water carbon dioxide into glucose oxygen inside chloroplasts of "
             "green plants using chlorophyll pigments during daylight hours across leaves worldwide every season "
             "reliably efficiently quietly")
    rows = [AnswerRow(id=f"p{i}", prompt="Explain photosynthesis.", policy_answer="Sunlight, water, glucose, "
                      "oxygen and chlorophyll.", reference_answer="Plants are nice.", known_good=known)
            for i in range(4)]
    ret = retention(rows, n_boot=50)
    assert ret.reference.content_recall < 0.05 < ret.policy.content_recall
    assert ret.kept is None             # not "kept 590 %"


def test_the_same_output_with_another_writer_is_refused_unless_asked(ollama_server, tmp_path: Path, monkeypatch,
                                                                     capsys) -> None:
    from loop.cli import main

    monkeypatch.setenv("OLLAMA_HOST", ollama_server.url)
    ollama_server.add_model("llama3.2:1b")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Say {w}.", "known_good": f"{w.title()}!"}) + "\n"
                               for w in ("hi", "bye")))
    out = tmp_path / "pairs.jsonl"
    base = ["generate", str(prompts), "-o", str(out), "-q"]
    assert main([*base, "--model", "ollama:llama3.1:70b"]) == 0
    before = out.read_bytes()
    assert main([*base, "--model", "ollama:llama3.2:1b", "--temperature", "0.2"]) == 2
    assert "other settings" in one_line_error(capsys) and out.read_bytes() == before
    assert main([*base, "--model", "ollama:llama3.2:1b", "--mix-settings"]) == 0


def test_a_write_refused_by_the_disk_names_the_file(tmp_path: Path) -> None:
    import resource
    import signal

    import pytest

    from prefloop.errors import problem
    from prefloop.files import atomic_write_text
    from prefloop.jsonl import JsonlAppender

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # EFBIG, as a full disk gives ENOSPC: write() fails
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, hard))
        with JsonlAppender(tmp_path / "pairs.jsonl") as out, pytest.raises(OSError) as err:
            out.append({"text": "x" * 50_000})
        assert err.value.filename == str(tmp_path / "pairs.jsonl")
        assert problem(err.value).startswith(f"{tmp_path / 'pairs.jsonl'}: File too large")
        with pytest.raises(OSError) as err:
            atomic_write_text(tmp_path / "results.json", "y" * 50_000)
        assert err.value.filename == str(tmp_path / "results.json")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)


def test_a_finite_divergence_stops_the_run_like_a_nan_does(tiny_model_dir: Path, tmp_path: Path,
                                                           monkeypatch) -> None:
    from test_trainer import cfg_for, quiet
    from trainer.dpo import DPOObjective
    from trainer.loop import run

    class Diverges(DPOObjective):     # the loss a too-high learning rate gives: finite, and thousands of times up
        calls = 0

        def loss(self, policy, batch):
            loss, metrics = super().loss(policy, batch)
            self.calls += 1
            if self.calls > 2:
                loss, metrics = loss * 3000, {**metrics, "loss": metrics["loss"] * 3000}
            return loss, metrics

    monkeypatch.setenv("PREFLOOP_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q{i}?", "chosen": f"Good answer {i}.",
                                        "rejected": f"Bad {i}."}) + "\n" for i in range(8)))
    cfg = cfg_for(tiny_model_dir, data, tmp_path / "r", max_steps=4, eval_split=0.0)
    result = run(cfg, Diverges(cfg), quiet())
    assert result.status == "failed" and result.exit_code == 1 and "diverged" in result.reason
    assert not (tmp_path / "r" / "final").exists()


def test_a_crashed_process_under_nproc_ends_with_the_resume_hint(tmp_path: Path, monkeypatch, capsys) -> None:
    import subprocess
    import sys

    import trainer.distributed as distributed
    from trainer.config import TrainConfig

    launched: list[list[str]] = []
    popen = subprocess.Popen

    def torchrun_whose_rank_crashed(cmd, *args, **kwargs):   # the real exit status torchrun gives then
        launched.append(cmd)
        return popen([sys.executable, "-c", "import sys; sys.exit(1)"])

    monkeypatch.setattr(distributed.subprocess, "Popen", torchrun_whose_rank_crashed)
    cfg = TrainConfig(model="m", data="d.jsonl", output_dir=str(tmp_path / "r"), nproc=2)
    assert distributed.launch(cfg, "train") == 1
    assert "torch.distributed.run" in launched[0]
    err = capsys.readouterr().err
    assert f"{tmp_path / 'r'}/checkpoints" in err and "--resume" in err


def test_export_adapter_needs_are_checked_before_the_merged_folder_is_written(ollama_server, tiny_model_dir: Path,
                                                                              tmp_path: Path, capsys) -> None:
    from loop.cli import main
    from test_export import lora_adapter

    adapter = lora_adapter(tiny_model_dir, tmp_path / "adapter")
    base = ["--ollama", "mine", "--host", ollama_server.url, "--adapter", "-q"]
    assert main(["export", str(adapter), *base, "--base", "no-such-base", "-o", str(tmp_path / "a")]) == 2
    assert "no-such-base" in one_line_error(capsys) and not (tmp_path / "a").exists()
    ollama_server.add_model("tiny-base")
    assert main(["export", str(tiny_model_dir), *base, "--base", "tiny-base", "-o", str(tmp_path / "b")]) == 2
    assert "no LoRA adapter" in one_line_error(capsys) and not (tmp_path / "b").exists()   # a full model
