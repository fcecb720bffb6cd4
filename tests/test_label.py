"""``prefloop label`` on the real screen, driven headless by pressing keys (textual's ``run_test`` and ``Pilot``):
what each key writes, resuming, undo across a restart, ties and skips, shuffled sides, hidden repeats, two raters,
a narrow terminal, and the pairs that ``prefloop train`` reads."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("textual")

from judge.comparisons import load_items  # noqa: E402
from judge.config import LabelConfig  # noqa: E402
from judge.label import label, left_side, log_path, plan  # noqa: E402
from judge.labels import Item, LabelLog, rater_agreement  # noqa: E402
from judge.stats import cohen_kappa  # noqa: E402
from prefloop.sources import load_preferences  # noqa: E402

ROWS = [{"id": f"q{i}", "prompt": f"Question {i}?", "answers": [f"Short answer {i}.", f"A much longer answer {i}."]}
        for i in range(8)]


def write_items(path: Path, rows: list[dict[str, Any]] = ROWS) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cfg_for(tmp_path: Path, **kw: Any) -> LabelConfig:
    source = kw.pop("source", None) or write_items(tmp_path / "items.jsonl")
    return LabelConfig(source=str(source), output=str(tmp_path / "pairs.jsonl"), rater=kw.pop("rater", "ann"), **kw)


def pressing(*keys: str, size: tuple[int, int] = (120, 40), seen: list[Any] | None = None, check: Any = None):
    """A person who presses ``keys`` one by one (``seen`` collects what was on screen before each key; ``check``
    runs after each key), then closes the terminal."""
    async def play(app: Any) -> None:
        async with app.run_test(size=size) as pilot:
            for key in keys:
                await pilot.pause()
                if seen is not None:
                    seen.append(app.deck.current())
                await pilot.press(key)
                if check is not None:
                    check(key)
    return play


def test_a_label_is_in_the_log_the_moment_its_key_is_pressed(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path)
    counts = []
    label(cfg, play=pressing("1", "2", "t", check=lambda key: counts.append(len(LabelLog.read(log_path(cfg.output))
                                                                                 .labels))))
    assert counts == [1, 2, 3]


def test_quit_half_way_then_the_same_command_resumes_at_the_first_unlabelled_item(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path)
    first = label(cfg, play=pressing("1", "1", "1", "q"))
    assert first.status == "interrupted" and first.labelled == 3
    seen: list[Any] = []
    second = label(cfg, play=pressing("2", seen=seen))
    assert seen[0].heading == f"item 4 of {len(ROWS)}"
    assert second.labelled == 4 and len(LabelLog.read(log_path(cfg.output)).labels) == 4


def test_undo_works_across_a_restart(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path)
    label(cfg, play=pressing("1", "2"))
    seen: list[Any] = []
    result = label(cfg, play=pressing("u", "t", seen=seen))
    log = LabelLog.read(log_path(cfg.output))
    assert seen[0].heading == "item 3 of 8" and seen[1].heading == "item 2 of 8"   # undo went back one item
    assert log.undone == 1 and [lab.verdict for lab in log.labels][-1] == "tie"
    assert result.pairs == 1 and result.ties == 1
    assert [p.to_json() for p in load_preferences(cfg.output)[0]] == [p.to_json() for p in log.pairs()]


def test_ties_and_skips_are_recorded_but_never_become_pairs(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path)
    result = label(cfg, play=pressing("t", "s", "1", "2"))
    pairs, _ = load_preferences(cfg.output)
    assert (result.ties, result.skips, result.pairs, len(pairs)) == (1, 1, 2, 2)
    assert {lab.verdict for lab in LabelLog.read(log_path(cfg.output)).labels} >= {"tie", "skip"}


def test_the_chosen_side_follows_the_key_and_the_pair_says_where_it_was_shown(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path)
    seen: list[Any] = []
    label(cfg, play=pressing("1", "2", "1", "2", seen=seen))
    pairs, _ = load_preferences(cfg.output)   # what `prefloop train --data` reads
    for shown, key, pair in zip(seen, "1212", pairs):
        picked, other = (shown.left, shown.right) if key == "1" else (shown.right, shown.left)
        assert (pair.chosen, pair.rejected) == (picked, other)
        assert pair.meta["chosen_position"] == ("left" if key == "1" else "right")
        assert pair.meta["rater"] == "ann" and pair.meta["seconds"] >= 0 and pair.meta["time"]


def test_left_and_right_are_shuffled_per_item_from_the_seed() -> None:
    sides = [left_side(0, f"item{i}", "ann", False) for i in range(40)]
    assert 10 < sides.count("a") < 30                                   # both sides lead, about half each
    assert sides == [left_side(0, f"item{i}", "ann", False) for i in range(40)]   # the same seed, the same sides
    assert sides != [left_side(1, f"item{i}", "ann", False) for i in range(40)]


def test_hidden_repeats_come_back_later_swapped_and_measure_self_consistency(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, repeats=0.25)
    slots = plan(load_items(cfg.source)[0], 0, 0.25)
    assert sum(s.repeat for s in slots) == 2 and len(slots) == len(ROWS) + 2
    seen: list[Any] = []
    # a person who always prefers the shorter answer, wherever it is shown: perfectly self-consistent
    keys = []

    async def play(app: Any) -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            while (shown := app.deck.current()) is not None:
                seen.append(shown)
                keys.append("1" if len(shown.left) < len(shown.right) else "2")
                await pilot.press(keys[-1])

    result = label(cfg, play=play)
    assert result.complete and result.repeats == 2 and result.pairs == len(ROWS)
    assert [(c.rater, c.n, c.same) for c in result.consistency] == [("ann", 2, 1.0)]
    repeats = [i for i, s in enumerate(slots) if s.repeat]
    for i in repeats:
        first = next(j for j, s in enumerate(slots) if s.item.id == slots[i].item.id and not s.repeat)
        assert (seen[i].left, seen[i].right) == (seen[first].right, seen[first].left)   # the other way round


def test_two_raters_on_the_same_items_give_their_agreement(tmp_path: Path) -> None:
    keys = {"ann": "1211221t", "bob": "12t1212t"}
    for rater, presses in keys.items():
        label(cfg_for(tmp_path, rater=rater), play=pressing(*presses))
    log = LabelLog.read(tmp_path / "pairs.jsonl.labels.jsonl")
    firsts = log.first_labels()
    common = sorted(firsts["ann"])
    expected = cohen_kappa([firsts["ann"][k].verdict for k in common], [firsts["bob"][k].verdict for k in common])
    [agreement] = rater_agreement(log)
    assert (agreement.a, agreement.b, agreement.n) == ("ann", "bob", len(ROWS))
    assert agreement.kappa == pytest.approx(expected)
    assert agreement.tie_share == pytest.approx(3 / 16)
    decided = sum(key in "12" for key in "".join(keys.values()))
    assert len(load_preferences(tmp_path / "pairs.jsonl")[0]) == decided   # each rater's decided labels are pairs


def test_a_narrow_terminal_stacks_the_answers(tmp_path: Path) -> None:
    boxes = {}

    async def play(app: Any) -> None:
        async with app.run_test(size=(140, 40)) as pilot:
            for size in ((140, 40), (80, 40)):
                await pilot.resize_terminal(*size)
                await pilot.pause()
                boxes[size] = [app.query_one(f"#{side}").region for side in ("left", "right")]

    label(cfg_for(tmp_path), play=play)
    (wl, wr), (nl, nr) = boxes[(140, 40)], boxes[(80, 40)]
    assert wl.y == wr.y and wl.x < wr.x        # side by side
    assert nl.x == nr.x and nl.y < nr.y        # stacked


def test_more_than_two_candidates_and_the_rank_strategys_pairs_are_compared_in_pairs(tmp_path: Path) -> None:
    rank_pair = {"prompt": "Pick a colour.", "chosen": "Blue.", "rejected": "Colours are hard.",
                 "meta": {"candidates": [{"text": "Blue.", "model": "m1"}, {"text": "Red, I think.", "model": "m2"},
                                         {"text": "Colours are hard.", "model": "m1"}]}}
    rows = [{"prompt": "Name a fruit.", "answers": ["Apple.", "Pear.", "A banana.", "apple."]}, rank_pair]
    items, report = load_items(write_items(tmp_path / "in.jsonl", rows))
    assert len(items) == 3 + 3 and report.kept == 6          # 'apple.' is 'Apple.' again: three distinct answers
    assert {it.meta["a_model"] for it in items if "a_model" in it.meta} <= {"m1", "m2"}
    capped, _ = load_items(tmp_path / "in.jsonl", max_pairs=2)
    assert len(capped) == 4


def test_a_pairs_file_is_relabelled_and_checked_against_its_own_labels(tmp_path: Path) -> None:
    pairs = [{"id": f"p{i}", "prompt": f"Q{i}", "chosen": f"good {i}", "rejected": f"bad answer {i}"} for i in range(4)]
    source = write_items(tmp_path / "old.jsonl", pairs)
    seen: list[Any] = []
    result = label(cfg_for(tmp_path, source=source), play=pressing("1", "1", "1", "1", seen=seen))
    agree = sum(shown.left.startswith("good") for shown in seen) / 4
    assert result.input_agreement["ann"] == {"n": 4, "same": agree}


def test_a_bad_input_row_names_its_file_line_and_field(tmp_path: Path) -> None:
    from prefloop.sources import DataError

    source = write_items(tmp_path / "bad.jsonl", [ROWS[0], {"prompt": "Q", "answers": ["one", 2]}])
    with pytest.raises(DataError, match=r"bad.jsonl:2: field 'answers\[1\]'"):
        label(cfg_for(tmp_path, source=source), play=pressing())


def test_the_log_reads_back_the_same_after_a_torn_last_line(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path)
    label(cfg, play=pressing("1", "2"))
    path = log_path(cfg.output)
    with path.open("ab") as fh:
        fh.write(b'{"kind": "label", "id": "x", "it')          # what kill -9 mid-write can leave
    assert len(LabelLog.read(path).labels) == 2
    result = label(cfg, play=pressing("1"))
    assert result.labelled == 3


def test_item_order_is_canonical_so_one_comparison_is_one_item() -> None:
    one, flipped_one = Item.of("p", "x", "y")
    two, flipped_two = Item.of("p", "y", "x")
    assert one.id == two.id and flipped_one != flipped_two


def test_without_a_terminal_the_screen_says_so(tmp_path: Path, monkeypatch: Any) -> None:
    from judge.label import NeedsTerminal, play_in_terminal

    monkeypatch.setattr("sys.stdin", open("/dev/null"))
    with pytest.raises(NeedsTerminal, match="interactive terminal"):
        asyncio.run(play_in_terminal(object()))


def test_an_alpaca_prompt_is_shown_as_its_instruction_and_trains_in_its_template(tmp_path: Path) -> None:
    rows = [{"instruction": "Convert 5 kilograms to grams.", "input": "", "answers": ["5000 grams.", "5000."]}]
    cfg = cfg_for(tmp_path, source=write_items(tmp_path / "alpaca.jsonl", rows))
    seen: list[Any] = []
    label(cfg, play=pressing("1", seen=seen))
    assert seen[0].prompt == "Convert 5 kilograms to grams."
    [pair], _ = load_preferences(cfg.output)
    assert pair.prompt_format == "alpaca" and pair.prompt.endswith("### Response:\n")
