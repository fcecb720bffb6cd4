"""The held-out split: whole prompts held out, chosen by a hash of the prompt's text, so a held-out prompt never
reaches training whatever ids its pairs carry. The held-out prompts are what the judge answers: the method's
point is to judge on prompts the model has not seen, never on the training loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loop.config import SplitSection
from prefloop.files import atomic_write_json
from prefloop.jsonl import write_jsonl
from prefloop.records import Prompt, PromptRecord, stable_id
from prefloop.sources import load_preferences
from prefloop.stage import StageResult


def split_key(prompt: Prompt) -> str:
    """The split's key for a prompt: a hash of its text, so a prompt is held out whatever id it carries."""
    return stable_id("split", prompt)


def choose_heldout(keys: list[str], cfg: SplitSection) -> set[str]:
    """Held-out keys: the first ``n`` by a seeded hash order. Deterministic, independent of input order."""
    unique = sorted(set(keys), key=lambda k: stable_id(cfg.seed, k))
    n = round(cfg.heldout_fraction * len(unique))
    n = max(n, min(cfg.heldout_min, len(unique) - 1))
    if cfg.heldout_max:
        n = min(n, cfg.heldout_max)
    n = max(0, min(n, len(unique) - 1))
    return set(unique[:n])


@dataclass
class SplitResult(StageResult):
    train_pairs: int = 0
    heldout_prompts: int = 0
    heldout_pairs: int = 0
    prompts_without_pairs: int = 0


def split_pairs(pairs_path: Path, prompts: list[PromptRecord], cfg: SplitSection, out_dir: Path) -> SplitResult:
    """Write ``train.jsonl`` (pairs of training prompts), ``heldout_pairs.jsonl`` (pairs of held-out prompts,
    for the trainer's eval curves and the judge's validation: their chosen side is known to be the better) and
    ``heldout_prompts.jsonl`` (what the judge answers). Pairs whose
    prompt is no longer among ``prompts`` are left out."""
    pairs, _ = load_preferences(pairs_path, skip_bad=True)
    keys = {split_key(p.prompt) for p in prompts}
    heldout = choose_heldout(list(keys), cfg)
    train_rows, heldout_rows = [], []
    for pair in pairs:
        key = split_key(pair.prompt)
        if key in keys:
            (heldout_rows if key in heldout else train_rows).append(pair.to_json())
    heldout_prompts = [p.to_json() for p in prompts if split_key(p.prompt) in heldout]
    paired = {split_key(p.prompt) for p in pairs}
    out = {"train": out_dir / "train.jsonl", "heldout_pairs": out_dir / "heldout_pairs.jsonl",
           "heldout_prompts": out_dir / "heldout_prompts.jsonl", "summary": out_dir / "summary.json"}
    write_jsonl(out["train"], train_rows)
    write_jsonl(out["heldout_pairs"], heldout_rows)
    write_jsonl(out["heldout_prompts"], heldout_prompts)
    result = SplitResult(outputs={k: str(v) for k, v in out.items()}, train_pairs=len(train_rows),
                         heldout_prompts=len(heldout_prompts), heldout_pairs=len(heldout_rows),
                         prompts_without_pairs=sum(1 for k in keys if k not in paired))
    atomic_write_json(out["summary"], result.to_json())
    return result
