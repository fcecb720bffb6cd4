"""Labels people already have: A/B CSV and JSONL (column names settable), Label Studio's pairwise export and
Argilla's ranking export (2.x nested and flattened, 1.x), read into the same label log and pairs as the screen's
labels, with file:line:field errors for bad rows. The files are written here in the shapes those tools document."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from judge.config import LabelConfig
from judge.label import label, log_path
from judge.labels import LabelLog
from prefloop.sources import DataError, load_preferences

PROMPTS = ["Greet me.", "Name a colour.", "What is 2+2?"]
GOOD = ["Hello, nice to see you!", "Blue.", "4."]
BAD = ["What do you want.", "I refuse.", "Maybe 5."]


def importing(tmp_path: Path, path: Path, **kw: Any) -> Any:
    cfg = LabelConfig(import_labels=str(path), output=str(tmp_path / "pairs.jsonl"), rater="me", **kw)
    return label(cfg)


def chosen_by_prompt(tmp_path: Path) -> dict[Any, set[str]]:
    pairs, _ = load_preferences(tmp_path / "pairs.jsonl")
    out: dict[Any, set[str]] = {}
    for p in pairs:
        out.setdefault(p.prompt, set()).add(p.chosen)
    return out


def test_an_ab_csv_with_its_own_column_names(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["question", "first", "second", "better", "who"])
        w.writerow([PROMPTS[0], GOOD[0], BAD[0], "A", "kim"])
        w.writerow([PROMPTS[1], BAD[1], GOOD[1], "b", "kim"])
        w.writerow([PROMPTS[2], GOOD[2], BAD[2], "Tie", "kim"])
    result = importing(tmp_path, path, prompt_column="question", a_column="first", b_column="second",
                       label_column="better", rater_column="who")
    assert (result.pairs, result.ties, result.imported) == (2, 1, 3)
    assert chosen_by_prompt(tmp_path) == {PROMPTS[0]: {GOOD[0]}, PROMPTS[1]: {GOOD[1]}}
    assert {lab.rater for lab in LabelLog.read(log_path(tmp_path / "pairs.jsonl")).labels} == {"kim"}


def test_importing_the_same_file_again_adds_nothing(tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "answer_a": g, "answer_b": b, "label": "A"}) + "\n"
                            for p, g, b in zip(PROMPTS, GOOD, BAD)))
    first = importing(tmp_path, path)
    again = importing(tmp_path, path)
    assert (first.imported, again.imported, again.pairs) == (3, 0, 3)


def test_a_bad_label_names_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("prompt,answer_a,answer_b,label\nQ,x,y,A\nQ2,x,y,maybe\nQ3,,y,B\n")
    with pytest.raises(DataError) as err:
        importing(tmp_path, path)
    text = str(err.value)
    assert "labels.csv:3: field 'label' 'maybe' is not A, B, tie or skip" in text
    assert "labels.csv:4: field 'answer_a'" in text


def labelstudio_task(i: int, selected: list[tuple[Any, str]]) -> dict[str, Any]:
    """One task of a Label Studio JSON export (Pairwise template: data text1/text2; result value.selected)."""
    return {"id": i + 1, "data": {"prompt": PROMPTS[i], "text1": GOOD[i], "text2": BAD[i]},
            "annotations": [{"id": 100 * i + k, "completed_by": who, "was_cancelled": side == "cancel",
                             "lead_time": 3.5, "created_at": "2026-11-30T10:00:00.000000Z",
                             "result": [] if side == "cancel" else
                             [{"from_name": "pw", "to_name": "text1,text2", "type": "pairwise",
                               "value": {"selected": side}}]}
                            for k, (who, side) in enumerate(selected)]}


def test_a_label_studio_pairwise_export(tmp_path: Path) -> None:
    tasks = [labelstudio_task(0, [(1, "left"), ({"id": 2, "email": "bo@x.org"}, "left")]),
             labelstudio_task(1, [(1, "right"), ({"id": 2, "email": "bo@x.org"}, "left")]),
             labelstudio_task(2, [(1, "cancel")])]
    path = tmp_path / "project-1-at-2026.json"
    path.write_text(json.dumps(tasks))
    result = importing(tmp_path, path)
    assert (result.pairs, result.skips) == (4, 1)
    log = LabelLog.read(log_path(tmp_path / "pairs.jsonl"))
    assert set(log.raters()) == {"1", "bo@x.org"}
    assert all(lab.seconds == 3.5 for lab in log.labels)
    [agreement] = result.agreement
    assert agreement.n == 2 and agreement.agreement == 0.5
    assert chosen_by_prompt(tmp_path)[PROMPTS[1]] == {GOOD[1], BAD[1]}   # the two raters disagreed here


def argilla_fields(i: int) -> dict[str, str]:
    return {"prompt": PROMPTS[i], "response_1": BAD[i], "response_2": GOOD[i]}


def test_an_argilla_ranking_export_in_each_of_its_shapes(tmp_path: Path) -> None:
    nested = [{"id": "r0", "fields": argilla_fields(0), "metadata": {}, "suggestions": {}, "vectors": {},
               "responses": {"ranking": [{"value": ["response_2", "response_1"], "user_id": "u-1"}]}}]
    flat = [{"id": "r1", **argilla_fields(1), "ranking.responses": [["response-2", "response-1"]],
             "ranking.responses.users": ["u-1"], "ranking.responses.status": ["submitted"]}]
    legacy = [{**argilla_fields(2), "ranking": [
        {"user_id": "u-1", "status": "submitted", "value": [{"value": "response_2", "rank": 1},
                                                            {"value": "response_1", "rank": 2}]},
        {"user_id": "u-2", "status": "submitted", "value": [{"value": "response_1", "rank": 1},
                                                            {"value": "response_2", "rank": 1}]},
        {"user_id": "u-3", "status": "discarded", "value": None}]}]
    for name, rows in (("nested.json", nested), ("flat.jsonl", flat), ("legacy.jsonl", legacy)):
        path = tmp_path / name
        path.write_text(json.dumps(rows) if name.endswith(".json") else
                        "".join(json.dumps(r) + "\n" for r in rows))
        importing(tmp_path, path)
    result = label(LabelConfig(import_labels=str(tmp_path / "legacy.jsonl"), output=str(tmp_path / "pairs.jsonl")))
    assert (result.pairs, result.ties) == (3, 1)                 # u-2 ranked both first: a tie, no pair
    assert chosen_by_prompt(tmp_path) == {p: {g} for p, g in zip(PROMPTS, GOOD)}


def test_an_argilla_option_that_names_no_field_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps({"fields": argilla_fields(0),
                                "responses": {"ranking": [{"value": ["reply-9", "response_1"], "user_id": "u"}]}})
                    + "\n")
    with pytest.raises(DataError, match=r"records.jsonl:1: field 'ranking.responses\[0\]' option 'reply-9' names "
                                        r"no text field"):
        importing(tmp_path, path)


def test_imported_and_screen_labels_meet_in_one_log(tmp_path: Path) -> None:
    """A comparison imported and the same one labelled on the screen are one item: their raters agree or not."""
    pytest.importorskip("textual")
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "answer_a": g, "answer_b": b, "label": "A", "rater": "kim"})
                            + "\n" for p, g, b in zip(PROMPTS, GOOD, BAD)))
    importing(tmp_path, path)
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"prompt": p, "answers": [b, g]}) + "\n" for p, g, b in zip(PROMPTS, GOOD, BAD)))

    async def pick_good(app: Any) -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            while (shown := app.deck.current()) is not None:
                await pilot.press("1" if shown.left in GOOD else "2")

    result = label(LabelConfig(source=str(items), output=str(tmp_path / "pairs.jsonl"), rater="me"), play=pick_good)
    [agreement] = result.agreement
    assert (agreement.a, agreement.b, agreement.n, agreement.agreement) == ("kim", "me", 3, 1.0)
