"""A ``python:`` judge for the seed's axis (``../shared/seed-data``: the rejected answer is the chosen one made
rude: "the stupid park", "every single day"), for ``bench/rounds.py``:
``python:seed_axis_judge:score`` with ``bench/`` on the path.

The lexicon is read from the training rows ``[:935]`` only (never the validation or test rows): words that occur
in at least 5 rejected answers and in no chosen answer. An answer scores minus the number of its words in that
lexicon (0 is best), so of two answers the less rude one wins and equally rude ones tie.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

SEED_NAME = Path("shared") / "seed-data" / "instruction-data-with-preference.json"
# beside the checkout (../shared), or beside the folder of worktrees holding it
SEED_PAIRS = next((p / SEED_NAME for p in Path(__file__).resolve().parents[1:4] if (p / SEED_NAME).exists()),
                  Path(__file__).resolve().parents[2] / SEED_NAME)
WORD = re.compile(r"[a-z']+")


@lru_cache(maxsize=1)
def lexicon() -> frozenset[str]:
    rows = json.loads(SEED_PAIRS.read_text())[:935]
    rude, kind = Counter(), Counter()
    for r in rows:
        rude.update(set(WORD.findall(r["rejected"].lower())))
        kind.update(set(WORD.findall(r["chosen"].lower())))
    return frozenset(w for w, n in rude.items() if n >= 5 and kind[w] == 0)


def score(prompt: str, answer: str) -> float:
    return -float(sum(w in lexicon() for w in WORD.findall(answer.lower())))
