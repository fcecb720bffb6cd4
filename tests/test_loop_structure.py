"""The loop's structure (issue 17, house review 3 §3-§4): the stage order is written once, so a changed [export]
setting is found before the run like any other stage's; run paths are typed."""

from __future__ import annotations

from pathlib import Path

import pytest

from loop.checks import needed_stages
from loop.config import STAGES, load_loop_config, stage_paths
from loop.stages import stage_settings
from prefloop.fingerprint import RunState
from test_loop import write_config


def test_a_changed_export_setting_reruns_export_and_judge(tmp_path: Path, tiny_model_dir: Path) -> None:
    path = write_config(tmp_path, tiny_model_dir, extra='\n[export]\nollama = "mine"\n')
    cfg = load_loop_config(path)
    state = RunState(cfg.run_dir)
    for name, settings in stage_settings(cfg).items():
        state.start(name, f"fp-{name}", [], settings=settings, resumable={"prompts": "same"})
        state.finish(name, {})
    assert needed_stages(cfg, state, stage_settings(cfg), "same") == set()
    changed = load_loop_config(path, ["export.quantize=\"q8_0\""])
    assert needed_stages(changed, state, stage_settings(changed), "same") == {"export", "judge"}


def test_run_paths_are_attributes() -> None:
    paths = stage_paths(Path("RUN"))
    assert paths.heldout_prompts == Path("RUN/split/heldout_prompts.jsonl") and paths.final == Path("RUN/train/final")
    with pytest.raises(AttributeError):
        paths.heldout_prompt  # noqa: B018 - a typo fails here, not at the judge stage
    assert STAGES.index("export") == STAGES.index("judge") - 1
