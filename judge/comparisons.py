"""What a person is asked to compare, from the files people have: ``Item`` lists for ``prefloop label``.

Three inputs, told apart row by row:

- candidates: ``{id?, prompt, answers: [two or more]}`` (``prompt`` may also be Alpaca ``instruction``/``input`` or
  chat ``messages``, as everywhere);
- the ``rank`` strategy's pairs: their ``meta.candidates`` hold every candidate the generator wrote;
- any pairs file (``chosen``/``rejected``): re-label it, or check it (``meta.input_chosen`` remembers which
  answer the file preferred, and the summary says how often the person agrees).

More than two candidates are compared in pairs, not ranked: every label is then the same binary judgement that
DPO trains on and that Cohen's κ compares between raters, and one decision per screen is quicker and steadier
than ordering four long answers. The pairs of a prompt are all of its candidate pairs up to ``max_pairs`` (a
seeded sample beyond that), so four candidates give six pairs.
"""

from __future__ import annotations

import random
from itertools import combinations
from pathlib import Path
from typing import Any

from judge.labels import Item
from prefloop.records import Prompt, RecordError, stable_id
from prefloop.sources import DataError, LoadReport, iter_rows, to_preference, to_prompt
from prefloop.text import same_text

PROMPT_META = ("prompt_format", "instruction", "input", "output")   # what training needs to render the prompt


def _texts(src: str, line: int, key: str, value: Any, of: str = "") -> list[str]:
    if not isinstance(value, list):
        raise RecordError(src, line, key, f"expected a list of answers, got {type(value).__name__}")
    texts = []
    for i, v in enumerate(value):
        text = v.get("text") if of and isinstance(v, dict) else v
        if not isinstance(text, str) or not text.strip():
            where = f"{key}[{i}]" + (f".{of}" if of else "")
            raise RecordError(src, line, where, "expected a non-empty string")
        texts.append(text.strip())
    return texts


def candidates_of(src: str, line: int, row: Any) -> tuple[str, Prompt, list[str], dict[str, Any]]:
    """``(id, prompt, answers, meta)`` of one input row, in any of the three shapes (see the module docstring)."""
    if isinstance(row, dict) and "answers" in row:
        rec = to_prompt(src, line, row)
        answers = _texts(src, line, "answers", row["answers"])
        meta = {k: rec.meta[k] for k in PROMPT_META if k in rec.meta}
        return rec.id, rec.prompt, answers, meta
    if not isinstance(row, dict) or "chosen" not in row:
        raise RecordError(src, line, "answers", "missing: give 'answers' (two or more candidates) or 'chosen' and "
                                                "'rejected' (a pair to re-label)")
    pair = to_preference(src, line, row)
    meta = {k: pair.meta[k] for k in PROMPT_META if k in pair.meta}
    found = pair.meta.get("candidates")
    if found is not None:   # the rank strategy's pair: every candidate it wrote
        answers = _texts(src, line, "meta.candidates", found, of="text")
        models = [c.get("model") for c in found]
        meta["candidate_models"] = models
        return pair.id, pair.prompt, answers, meta
    meta["input_chosen"] = "a"
    return pair.id, pair.prompt, [pair.chosen, pair.rejected], meta


def pairs_of(answers: list[str], max_pairs: int, seed: Any) -> list[tuple[int, int]]:
    """The candidate pairs to compare: all of them, or a seeded sample of ``max_pairs`` in their order."""
    every = list(combinations(range(len(answers)), 2))
    if len(every) <= max_pairs:
        return every
    keep = sorted(random.Random(stable_id("pairs", seed)).sample(range(len(every)), max_pairs))
    return [every[i] for i in keep]


def load_items(source: str | Path, *, max_pairs: int = 6, seed: int = 0, limit: int = 0
               ) -> tuple[list[Item], LoadReport]:
    """Every comparison in ``source`` (the first ``limit`` rows when > 0); bad rows raise ``DataError`` naming
    file, line and field. Candidates that read the same (``same_text``) are compared once."""
    report = LoadReport(source=str(source))
    items: list[Item] = []
    seen: set[str] = set()
    rows = 0
    for src, line, row in iter_rows(source):
        if limit and rows >= limit:
            break
        rows += 1
        try:
            rid, prompt, answers, meta = candidates_of(src, line, row)
        except RecordError as err:
            report.errors.append(err)
            continue
        distinct: list[int] = []
        for i, text in enumerate(answers):
            if not any(same_text(text, answers[j]) for j in distinct):
                distinct.append(i)
        if len(distinct) < 2:
            report.dropped["fewer than 2 distinct answers"] += 1
            continue
        texts = [answers[i] for i in distinct]
        for i, j in pairs_of(texts, max_pairs, (seed, rid)):
            extra = {k: v for k, v in meta.items() if k not in ("candidate_models", "input_chosen")}
            extra.update(source=f"{src}:{line}", source_id=rid)
            item, flipped = Item.of(prompt, texts[i], texts[j], extra)
            if item.id in seen:
                report.dropped["the same comparison twice"] += 1
                continue
            seen.add(item.id)
            first, second = (distinct[j], distinct[i]) if flipped else (distinct[i], distinct[j])
            item.meta["answers"] = [first, second]          # a and b as indices into the row's answers
            if "candidate_models" in meta:
                item.meta.update(a_model=meta["candidate_models"][first], b_model=meta["candidate_models"][second])
            if "input_chosen" in meta:                      # a pairs file: its chosen answer was the first
                item.meta["input_chosen"] = "b" if flipped else "a"
            items.append(item)
    report.kept = len(items)
    if report.errors:
        raise DataError(report.errors)
    if not items:
        raise DataError([RecordError(str(source), None, None, "nothing to compare in it (rows need two or more "
                                                              "different answers)")])
    return items, report
