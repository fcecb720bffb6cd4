"""Stage fingerprints and the run folder's stage record."""

from __future__ import annotations

import json

from prefloop.fingerprint import RunState, file_hash, fingerprint, model_identity


def test_fingerprint_depends_on_settings_and_inputs_not_key_order():
    a = fingerprint({"beta": 0.1, "lr": 1e-6}, {"pairs": "abc"})
    assert a == fingerprint({"lr": 1e-6, "beta": 0.1}, {"pairs": "abc"})
    assert a != fingerprint({"beta": 0.2, "lr": 1e-6}, {"pairs": "abc"})
    assert a != fingerprint({"beta": 0.1, "lr": 1e-6}, {"pairs": "abd"})


def test_file_hash_follows_content_not_mtime(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_text("one\n")
    h1 = file_hash(f)
    f.write_text("one\n")
    assert file_hash(f) == h1
    f.write_text("two\n")
    assert file_hash(f) != h1
    folder = tmp_path / "d"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "x.txt").write_text("x")
    (folder / ".lock").write_text("ignored")
    h2 = file_hash(folder)
    (folder / ".lock").write_text("changed")
    assert file_hash(folder) == h2
    (folder / "sub" / "x.txt").write_text("y")
    assert file_hash(folder) != h2


def test_model_identity(tmp_path):
    assert model_identity("ollama-model:7b") == "name:ollama-model:7b"
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(b"123")
    ident = model_identity(str(tmp_path / "m"))
    (tmp_path / "m" / "w.bin").write_bytes(b"12345")
    assert model_identity(str(tmp_path / "m")) != ident


def test_skip_resume_fresh_and_stale_outputs(tmp_path):
    state = RunState(tmp_path)
    assert state.decide("train", "fp1") == "fresh"
    assert state.start("train", "fp1", ["train"], settings={"beta": 0.1}) == "fresh"
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "ckpt").write_text("step 3")
    # killed before finish: a new process reads the record and resumes
    assert RunState(tmp_path).decide("train", "fp1") == "resume"
    state = RunState(tmp_path)
    assert state.start("train", "fp1", ["train"]) == "resume"
    assert (tmp_path / "train" / "ckpt").read_text() == "step 3"  # resume keeps the partial outputs
    state.finish("train", info={"steps": 5})
    again = RunState(tmp_path)
    assert again.decide("train", "fp1") == "skip"
    assert again.get("train").info == {"steps": 5} and again.get("train").runs == 2
    # outputs deleted by hand: not complete any more, run again
    (tmp_path / "train" / "ckpt").rename(tmp_path / "ckpt.bak")
    (tmp_path / "train").rmdir()
    assert again.decide("train", "fp1") == "resume"
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "final").write_text("old model")
    again.finish("train")
    # a changed setting: fresh, and the old outputs move aside instead of being mixed with the new run
    assert again.decide("train", "fp2") == "fresh"
    assert again.start("train", "fp2", ["train", "train/final"]) == "fresh"
    assert not (tmp_path / "train").exists()
    assert (tmp_path / "stale" / "train" / "train" / "final").read_text() == "old model"
    saved = json.loads((tmp_path / "state.json").read_text())
    assert saved["stages"]["train"]["fingerprint"] == "fp2" and saved["stages"]["train"]["status"] == "running"


def test_outputs_outside_run_folder_are_refused(tmp_path):
    state = RunState(tmp_path / "run")
    try:
        state.start("gen", "fp", [tmp_path / "elsewhere.jsonl"])
    except ValueError as exc:
        assert "outside the run folder" in str(exc)
    else:
        raise AssertionError("expected a ValueError")
