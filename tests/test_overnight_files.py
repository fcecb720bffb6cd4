"""Issue 9, item 5 (and 9): outputs cannot be shared or confused. A symlinked spelling of an output is the same
lock; an output that is the input is refused before anything is written; an output folder that cannot be
written to is one line, not a traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from loop.cli import main
from prefloop.files import Busy, Lock


def test_a_symlinked_output_is_the_same_lock(tmp_path: Path) -> None:
    real = tmp_path / "pairs.jsonl"
    link_dir = tmp_path / "elsewhere"
    link_dir.symlink_to(tmp_path)
    with Lock(real):
        with pytest.raises(Busy, match="another run"):
            with Lock(link_dir / "pairs.jsonl"):
                pass


def test_an_output_that_is_the_input_is_refused(tmp_path: Path, capsys, ollama_server, monkeypatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", ollama_server.url)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "Say hi.", "known_good": "Hi."}) + "\n")
    before = prompts.read_bytes()
    link = tmp_path / "same.jsonl"
    link.symlink_to(prompts)
    for out in (prompts, link):
        assert main(["generate", str(prompts), "-o", str(out), "--model", "ollama:llama3.1:70b"]) == 2
        assert "is the prompts file" in capsys.readouterr().err
    assert prompts.read_bytes() == before


def test_an_output_folder_that_cannot_be_written_is_one_line(tmp_path: Path, capsys, ollama_server) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "Say hi.", "known_good": "Hi."}) + "\n")
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")     # as root a read-only folder is writable; a file in the way is not
    targets = [blocked / "pairs.jsonl"]
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        targets.append(ro / "pairs.jsonl")
    for out in targets:
        code = main(["generate", str(prompts), "-o", str(out), "--model", "ollama:llama3.1:70b",
                     "--set", "generate.timeout_s=5"])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error:") and "Traceback" not in err and str(out.parent) in err
