"""bench/alignment.py: every row of its table is a command a user can run. The ``prefloop train`` command it
prints for a setting builds the same training settings as the benchmark itself (runtime-only ones aside)."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import alignment as A  # noqa: E402

from trainer.cli import add_arguments, build_config  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402

RUNTIME_ONLY = {"threads", "live"}


@pytest.mark.parametrize("setting", A.GRID + A.SEARCH + [A.RECIPE], ids=lambda s: s.name)
def test_the_printed_train_command_trains_what_the_benchmark_trains(setting, tmp_path):
    data = {"train": tmp_path / "train.json", "val": tmp_path / "val.json"}
    out = tmp_path / "run"
    bench = A.train_config(setting, data, out)
    argv = shlex.split(A.train_command(setting, data, out))
    assert argv[:2] == ["prefloop", "train"]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    cli = build_config(parser.parse_args(argv[2:]))
    for f in dataclasses.fields(TrainConfig):
        if f.name not in RUNTIME_ONLY:
            assert getattr(cli, f.name) == getattr(bench, f.name), f.name


def test_the_defaults_row_is_the_plain_command(tmp_path):
    # rpo1-chat is what `prefloop train --model smollm2 --data ... --eval-data ... -o ...` trains: no flag beyond
    # the prompt format, which `auto` resolves to chat for Alpaca rows and a chat model
    data = {"train": tmp_path / "t.json", "val": tmp_path / "v.json"}
    cmd = A.train_command(next(s for s in A.SEARCH if s.name == "rpo1-chat"), data, tmp_path / "o")
    assert cmd.endswith(f"-o {tmp_path / 'o'} --prompt-format chat")


def test_extra_settings_reach_the_trainer(tmp_path):
    s = A.Setting("cdpo", lr=5e-6, rpo_alpha=1.0, extra=(("loss_type", "cdpo"), ("label_smoothing", 0.1)))
    data = {"train": tmp_path / "t.json", "val": tmp_path / "v.json"}
    assert A.train_config(s, data, tmp_path).loss_type == "cdpo"
    assert "--loss-type cdpo --label-smoothing 0.1" in A.train_command(s, data, tmp_path)


def test_every_import_inside_the_benchmark_resolves():
    # its measurement imports inside functions, after an hour of training: a name moved by another change (e.g.
    # load_pairs from trainer.dpo to trainer.data) crashed it only then
    import ast
    import importlib

    tree = ast.parse((ROOT / "bench" / "alignment.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module != "__future__":
            mod = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(mod, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}"), \
                    f"{node.module}.{alias.name}"
