"""``prefloop label --mode thumbs`` on the real screen, driven headless (textual's ``run_test`` and ``Pilot``): each
key marks one answer good or bad and is in the log at once; quitting and resuming, undo across a restart, skips,
hidden repeats, two raters, the inputs it reads, and the labelled rows that ``prefloop train --objective kto``
reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("textual")

from judge.config import LabelConfig  # noqa: E402
from judge.label import log_path  # noqa: E402
from judge.thumbs import ThumbLog, label_thumbs as label  # noqa: E402
from prefloop.config import ConfigError  # noqa: E402
from prefloop.records import RecordError  # noqa: E402
from prefloop.sources import load_labelled  # noqa: E402

ROWS = [{"id": f"q{i}", "prompt": f"Question {i}?", "completion": f"Answer number {i}."} for i in range(6)]


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cfg_for(tmp_path: Path, rows: list[dict[str, Any]] = ROWS, **kw: Any) -> LabelConfig:
    source = write(tmp_path / "answers.jsonl", rows)
    return LabelConfig(mode="thumbs", source=str(source), output=str(tmp_path / "labelled.jsonl"),
                       rater=kw.pop("rater", "ann"), **kw)


def pressing(*keys: str, seen: list[Any] | None = None, check: Any = None):
    """A person who presses ``keys`` one by one (``seen`` collects what was on screen before each key)."""
    async def play(app: Any) -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            for key in keys:
                await pilot.pause()
                if seen is not None:
                    seen.append(app.deck.current())
                await pilot.press(key)
                if check is not None:
                    check(key)
    return play


def output_rows(cfg: LabelConfig) -> list[dict[str, Any]]:
    return [json.loads(x) for x in Path(cfg.output).read_text().splitlines() if x.strip()]


def test_each_key_marks_one_answer_and_is_written_at_once(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path)
    counts: list[tuple[int, int]] = []
    seen: list[Any] = []
    result = label(cfg, play=pressing("1", "2", "s", "plus", "minus", "1", seen=seen,
                                      check=lambda key: counts.append((len(ThumbLog.read(log_path(cfg.output)).labels),
                                                                       len(output_rows(cfg))))))
    assert counts == [(1, 1), (2, 2), (3, 2), (4, 3), (5, 4), (6, 5)]      # a skip is logged, never a row
    assert [s.answer for s in seen] == [r["completion"] for r in ROWS] and seen[0].heading == "answer 1 of 6"
    assert seen[0].prompt == "Question 0?"
    rows = output_rows(cfg)
    assert [(r["completion"], r["label"]) for r in rows] == [("Answer number 0.", True), ("Answer number 1.", False),
                                                             ("Answer number 3.", True), ("Answer number 4.", False),
                                                             ("Answer number 5.", True)]
    assert all(set(r) == {"id", "prompt", "completion", "label", "meta"} and r["meta"]["rater"] == "ann" for r in rows)
    assert result.complete and (result.desirable, result.undesirable, result.skips) == (3, 2, 1)
    records, _ = load_labelled(cfg.output)                                # what `prefloop train --objective kto` reads
    assert [r.label for r in records] == [True, False, True, False, True]


def test_quit_resume_and_undo_across_a_restart(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path)
    first = label(cfg, play=pressing("1", "1", "q"))
    assert first.status == "interrupted" and first.labelled == 2 and len(output_rows(cfg)) == 2
    seen: list[Any] = []
    second = label(cfg, play=pressing("u", "2", "2", seen=seen))
    assert [s.heading for s in seen] == ["answer 3 of 6", "answer 2 of 6", "answer 3 of 6"]
    log = ThumbLog.read(log_path(cfg.output))
    assert log.undone == 1 and second.labelled == 3
    assert [(r["completion"], r["label"]) for r in output_rows(cfg)] == [("Answer number 0.", True),
                                                                         ("Answer number 1.", False),
                                                                         ("Answer number 2.", False)]
    assert [r.to_json() for r in log.labelled()] == output_rows(cfg)


def test_a_torn_output_is_rebuilt_from_the_log(tmp_path: Path) -> None:
    """A run killed between the log line and the output row: the next run rebuilds the rows from the log."""
    cfg = cfg_for(tmp_path)
    label(cfg, play=pressing("1", "2", "q"))
    Path(cfg.output).write_text(Path(cfg.output).read_text().splitlines()[0] + "\n")   # the second row never landed
    label(cfg, play=pressing("q"))
    assert [r["label"] for r in output_rows(cfg)] == [True, False]


def test_inputs_pairs_and_scored_answers_are_checked_against_their_labels(tmp_path: Path) -> None:
    rows = [{"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon."},
            {"prompt": "2+2?", "completion": "4", "label": True},
            {"prompt": "2+2?", "completion": "5", "label": False}]
    cfg = cfg_for(tmp_path, rows)
    seen: list[Any] = []
    result = label(cfg, play=pressing("1", "1", "1", "2", seen=seen))
    assert [s.answer for s in seen] == ["Paris.", "Lyon.", "4", "5"]
    # the person agreed with the pair's chosen side, disagreed on Lyon, agreed on both scored answers
    assert result.input_agreement == {"ann": {"n": 4, "same": 0.75}}


def test_two_raters_and_hidden_repeats(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path)
    label(cfg, play=pressing(*"121212"))
    other = cfg_for(tmp_path, rater="bob")
    result = label(other, play=pressing(*"121211"))
    (agree,) = result.agreement
    assert (agree.a, agree.b, agree.n) == ("ann", "bob", 6) and agree.agreement == pytest.approx(5 / 6)
    assert len(output_rows(cfg)) == 12 and result.per_rater == {"ann": 6, "bob": 6}

    (tmp_path / "repeats").mkdir()
    again = cfg_for(tmp_path / "repeats", repeats=0.5, rater="cy")
    seen: list[Any] = []
    got = label(again, play=pressing(*["1"] * 9, seen=seen))
    assert len(seen) == 9 and got.repeats == 3
    (consistency,) = got.consistency
    assert consistency.n == 3 and consistency.same == 1.0
    assert len(output_rows(again)) == 6                                     # repeats are never rows


def test_a_pairwise_log_and_an_import_are_refused_with_the_fix(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path)
    log_path(cfg.output).write_text(json.dumps({"kind": "item", "item": "x", "prompt": "p", "a": "1", "b": "2"})
                                    + "\n")
    with pytest.raises(RecordError, match=r"labelled.jsonl.labels.jsonl:1: field 'kind' .*pairwise.*another --output"):
        label(cfg, play=pressing("1"))
    with pytest.raises(ConfigError, match="import"):
        LabelConfig(mode="thumbs", source="x", output="y", import_labels="z.csv")
    with pytest.raises(ConfigError, match="mode"):
        LabelConfig(mode="stars", source="x", output="y")


def test_the_cli_flag_and_toml_key_reach_the_thumbs_labeller(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Only the thumbs labeller reads a pairwise log as the wrong mode: the error shows which one ran."""
    from loop.cli import main

    cfg = cfg_for(tmp_path)
    log_path(cfg.output).write_text(json.dumps({"kind": "item", "item": "x", "prompt": "p", "a": "1", "b": "2"})
                                    + "\n")
    assert main(["label", cfg.source, "-o", cfg.output, "--mode", "thumbs"]) == 2
    assert "pairwise" in capsys.readouterr().err
    toml = tmp_path / "label.toml"
    toml.write_text('[label]\nmode = "thumbs"\n')
    assert main(["label", cfg.source, "-o", cfg.output, "--config", str(toml)]) == 2
    assert "pairwise" in capsys.readouterr().err
