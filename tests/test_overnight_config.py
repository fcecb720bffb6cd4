"""Issue 9, item 8: a config mistake is an error naming the file and the key, in every command, before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from loop.cli import main


@pytest.mark.parametrize("command, section", [("generate", "generat"), ("train", "trian"), ("judge", "jugde")])
def test_a_typo_in_a_section_name_is_refused_by_every_command(tmp_path: Path, capsys, command: str,
                                                               section: str) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text(f"[{section}]\nmodel = 'x'\n")
    args = {"generate": ["prompts.json", "-o", str(tmp_path / "p.jsonl")],
            "train": ["--data", "pairs.jsonl"], "judge": ["--policy", "p"]}[command]
    assert main([command, "--config", str(toml), *args]) == 2
    err = capsys.readouterr().err
    assert f"[{section}]" in err and str(toml) in err and "unknown section" in err


@pytest.mark.parametrize("command, setting, value", [
    ("generate", "max_tokens", "-5"), ("generate", "timeout_s", "0"), ("judge", "timeout_s", "0"),
    ("judge", "max_tokens", "0"), ("train", "max_length", "0")])
def test_out_of_range_values_are_refused_with_the_key(tmp_path: Path, capsys, command: str, setting: str,
                                                      value: str) -> None:
    args = {"generate": ["prompts.json", "-o", str(tmp_path / "p.jsonl")],
            "train": ["--data", "pairs.jsonl"], "judge": ["--policy", "p"]}[command]
    assert main([command, *args, "--set", f"{setting}={value}"]) == 2
    assert f"{command}.{setting}" in capsys.readouterr().err
