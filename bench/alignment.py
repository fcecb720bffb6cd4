"""Alignment benchmark: which training settings learn the preference *and* keep the skill, on the real pairs.

SmolLM2-135M-Instruct is trained with ``prefloop train`` on the reference recipe's training rows of
``../shared/seed-data/instruction-data-with-preference.json`` (rows ``[:935]``: 929 pairs after 6 identical ones
are dropped; one epoch, batch 8) for each setting of a small grid, and measured on the validation rows
``[1045:]`` (55 pairs): settings are chosen there, never on the test rows ``[935:1045]``, which stay for the
final check of the chosen setting (``--final``). The data is read from ``../shared/seed-data/`` and sliced into
the cache, never into the repository.

Per setting it prints, against the reference model (the untrained SFT model, measured in the same run):

- held-out reward accuracy: the share of validation pairs whose chosen answer gained more log-probability over
  the reference than the rejected one did (through the chat template, where the model is used, and through the
  raw Alpaca text);
- skill retention (``judge.retention``, no judge model): content-word recall of the dataset answer, ROUGE-L F1,
  the share of answers opening with one stock phrase, loops, empty answers, length ratio, and per prompt which
  model kept more;
- the preference win rate with the best judge available here (the embedded SmolLM2 reading its verdict from
  token probabilities), only where that judge validated above chance on the validation pairs.

Answers are generated greedily, 128 new tokens, through the chat template (``prompt_format = "chat"``): how the
model is used. Trained models, reference log-probs and generated answers are cached under
``$PREFLOOP_CACHE/bench/alignment`` (``~/.cache/prefloop``), so a rerun measures again without training again.
Long CPU work: run it under ``flock /tmp/prefloop-heavy.lock`` on a shared machine.

    .venv/bin/python bench/alignment.py                    # the grid on the validation rows
    .venv/bin/python bench/alignment.py --only rpo1-chat   # one setting
    .venv/bin/python bench/alignment.py --final rpo1-chat  # the chosen setting on the test rows
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SEED_PAIRS = ROOT.parent / "shared" / "seed-data" / "instruction-data-with-preference.json"
SLICES = {"train": (0, 935), "test": (935, 1045), "val": (1045, None)}
# what every setting shares: the recipe's batch and epoch, prefloop's optimisation defaults
COMMON = dict(model="smollm2", batch_size=8, epochs=1.0, seed=42, dtype="fp32", max_length=1024, live=False,
              threads=2)


@dataclass(frozen=True)
class Setting:
    """One row of the grid: the trainer settings it changes."""

    name: str
    lr: float = 1e-6
    beta: float = 0.1
    rpo_alpha: float = 0.0
    prompt_format: str = "alpaca"
    logp_average: bool = False
    schedule: str = "linear"
    max_grad_norm: float = 1.0

    def train_settings(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "name"}


# The grid, capped to about an hour of this 2-core machine (one epoch is ~15 minutes of training here, answers
# and judging ~5 more): the trainer's defaults before this benchmark (lr 1e-6, plain DPO, Alpaca text), the NLL anchor (RPO) at the recipe's learning rate in both prompt
# formats, and one step further on the learning rate and on beta in the better format.
GRID = [
    Setting("defaults", lr=1e-6, prompt_format="alpaca"),
    Setting("rpo1-alpaca", lr=5e-6, rpo_alpha=1.0, prompt_format="alpaca"),
    Setting("rpo1-chat", lr=5e-6, rpo_alpha=1.0, prompt_format="chat"),
    Setting("rpo1-chat-lr1e-5", lr=1e-5, rpo_alpha=1.0, prompt_format="chat"),
    Setting("rpo1-chat-beta0.3", lr=5e-6, beta=0.3, rpo_alpha=1.0, prompt_format="chat"),
]
RECIPE = Setting("recipe", lr=5e-6, logp_average=True, schedule="constant", max_grad_norm=0.0)


def root() -> Path:
    from prefloop.models import cache_dir

    return cache_dir() / "bench" / "alignment"


def data_slices() -> dict[str, Path]:
    """The seed rows sliced into the cache (JSON arrays of Alpaca rows with chosen/rejected)."""
    rows = json.loads(SEED_PAIRS.read_text())
    out = {}
    for name, (start, end) in SLICES.items():
        path = root() / "data" / f"{name}.json"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(rows[start:end]))
        out[name] = path
    return out


def prompts_file(pairs: Path) -> Path:
    """The pairs' prompts as Alpaca rows, their dataset ``output`` the known-good answer (not the chosen side)."""
    path = pairs.with_name(pairs.stem + "-prompts.json")
    if not path.exists():
        rows = json.loads(pairs.read_text())
        path.write_text(json.dumps([{k: r[k] for k in ("instruction", "input", "output")} for r in rows]))
    return path


# ------------------------------------------------------------------------------------------------- train

def trained(setting: Setting, data: dict[str, Path]) -> Path:
    """The final model of ``setting`` (trained once, then read from the cache)."""
    from rich.console import Console

    from prefloop.records import stable_id
    from trainer.config import TrainConfig
    from trainer.dpo import train

    key = stable_id(COMMON, setting.train_settings(), data["train"].stat().st_size)
    out = root() / "train" / f"{setting.name}-{key[:8]}"
    if (out / "final" / "config.json").exists():
        return out / "final"
    cfg = TrainConfig(**COMMON, **setting.train_settings(), data=str(data["train"]), eval_data=str(data["val"]),
                      output_dir=str(out))
    t0 = time.perf_counter()
    result = train(cfg, Console(stderr=True))
    if not result.complete:
        raise SystemExit(f"{setting.name}: training stopped: {result.reason}")
    (out / "bench.json").write_text(json.dumps({"setting": asdict(setting), "seconds": time.perf_counter() - t0,
                                                "steps": result.steps}))
    return out / "final"


# ----------------------------------------------------------------------------------------------- measure

@dataclass
class Preference:
    """Held-out reward accuracy of a model over the reference on pairs, through one prompt format, and the
    chosen answers' mean log-probability per token before and after (likelihood displacement)."""

    accuracy: float
    chosen_logp: float
    chosen_logp_reference: float


def reward_accuracy(model_dir: Path, pairs: Path, fmt: str, logp_average: bool) -> Preference:
    """The trainer's ``rewards/accuracies`` recomputed for ``model_dir`` on ``pairs`` rendered as ``fmt``: the
    share of pairs whose chosen answer gained more log-probability over the reference than the rejected one
    (per-token means when the setting averages). The reference's log-probs come from the trainer's disk cache."""
    from prefloop.models import load_model
    from trainer.dpo import load_pairs
    import torch

    from trainer.logps import PackedLM
    from trainer.refcache import compute_ref_logps, load_or_compute, model_digest
    from trainer.tokenize import tokenize_records

    items, _ = load_pairs(str(pairs))
    ref_model, tok = load_model("smollm2")
    examples, _ = tokenize_records(tok, items, prompt_format=fmt, max_length=COMMON["max_length"],
                                   max_prompt_length=None)
    cpu = torch.device("cpu")
    ref, _, _ = load_or_compute(PackedLM(ref_model), examples, tok.pad_token_id, batch_size=16, dtype="fp32",
                                model_hash=model_digest(ref_model), device=cpu)
    del ref_model
    model, _ = load_model(str(model_dir))
    pol, _ = compute_ref_logps(PackedLM(model), examples, tok.pad_token_id, batch_size=16, dtype="fp32", device=cpu)
    wins, chosen, chosen_ref = 0, 0.0, 0.0
    for ex in examples:
        (pw, pl), (rw, rl), (nw, nl) = pol.sums[ex.id], ref.sums[ex.id], pol.counts[ex.id]
        if logp_average:
            pw, pl, rw, rl = pw / nw, pl / nl, rw / nw, rl / nl
        wins += (pw - rw) > (pl - rl)
        chosen += pol.sums[ex.id][0] / nw
        chosen_ref += ref.sums[ex.id][0] / nw
    n = len(examples)
    return Preference(wins / n, chosen / n, chosen_ref / n)


@dataclass
class Row:
    """One line of the table."""

    name: str
    settings: dict[str, Any]
    reward_chat: Preference | None = None
    reward_alpaca: Preference | None = None
    results: Any = None                       # judge.results.JudgeResults
    seconds: float | None = None
    notes: list[str] = field(default_factory=list)


def measure(name: str, model_dir: Path, pairs: Path, split: str) -> Any:
    """Answers through the chat template, retention, the judge's validation and win rate: ``prefloop judge``'s
    own path (answers and judgments resume from the eval folder; the reference's answers are shared)."""
    import shutil

    from judge.config import JudgeConfig
    from judge.evaluate import evaluate
    from prefloop.records import stable_id

    out = root() / "eval" / split / f"{name}-{stable_id(str(model_dir))[:8]}"
    shared = root() / "eval" / split / "gen-reference.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    if shared.exists() and not (out / "gen-reference.jsonl").exists():
        shutil.copy(shared, out / "gen-reference.jsonl")
    cfg = JudgeConfig(policy=str(model_dir), reference="smollm2", prompts=str(prompts_file(pairs)),
                      judges=["local:smollm2"], validate=str(pairs), prompt_format="chat", max_tokens=128,
                      batch_size=8, output_dir=str(out), cache=str(root() / "judge-cache.sqlite"),
                      score_known_good=False, quiet=True)
    results = evaluate(cfg)
    if not shared.exists():
        shutil.copy(out / "gen-reference.jsonl", shared)
    return results


def row_for(setting: Setting, data: dict[str, Path], split: str) -> Row:
    model_dir = trained(setting, data)
    pairs = data[split]
    row = Row(setting.name, setting.train_settings())
    info = model_dir.parent / "bench.json"
    if info.exists():
        row.seconds = json.loads(info.read_text())["seconds"]
    row.reward_chat = reward_accuracy(model_dir, pairs, "chat", setting.logp_average)
    row.reward_alpaca = reward_accuracy(model_dir, pairs, "alpaca", setting.logp_average)
    row.results = measure(setting.name, model_dir, pairs, split)
    return row


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f}%"


def table(rows: list[Row]) -> str:
    """The grid as a Markdown table (the README keeps a copy)."""
    head = ("| setting | lr | β | rpo_α | trained as | reward acc (chat / alpaca) | chosen logp/token | content "
            "recall (kept) | ROUGE-L | stock opening | loops | length × | judge acc (debiased) | win rate |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    ref = rows[0].results.retention.reference if rows and rows[0].results else None
    if ref is not None:
        lines.append(f"| reference (SFT) | | | | | | {rows[0].reward_chat.chosen_logp_reference:.2f} | "
                     f"{ref.content_recall:.3f} | {ref.rouge_l:.3f} | {pct(ref.stock_share)} | {ref.loops} | 1.00 | "
                     f"| |")
    for r in rows:
        ret, head_ = r.results.retention, r.results.headline
        v = head_.validation
        judge = "—" if v is None else f"{pct(v.accuracy)} ({pct(v.debiased_accuracy)})"
        win = f"{pct(head_.win_rate)}" if v is not None and v.above_chance else "— (judge at chance)"
        s = r.settings
        lines.append(f"| {r.name} | {s['lr']:g} | {s['beta']:g} | {s['rpo_alpha']:g} | {s['prompt_format']} | "
                     f"{pct(r.reward_chat.accuracy)} / {pct(r.reward_alpaca.accuracy)} | "
                     f"{r.reward_chat.chosen_logp:.2f} | {ret.policy.content_recall:.3f} ({pct(ret.kept)}) | "
                     f"{ret.policy.rouge_l:.3f} | {pct(ret.policy.stock_share)} | {ret.policy.loops} | "
                     f"{ret.length_ratio:.2f} | {judge} | {win} |")
    return "\n".join(lines)


def meets(r: Row) -> list[str]:
    """The issue's goals this setting misses (empty: all met)."""
    ret = r.results.retention
    miss = []
    if r.reward_chat.accuracy < 0.85:
        miss.append(f"reward accuracy {r.reward_chat.accuracy:.2f} < 0.85")
    if ret.kept is None or ret.kept < 0.95:
        miss.append(f"content kept {pct(ret.kept)} < 95%")
    if ret.policy.stock_share > 0.10:
        miss.append(f"stock opening {pct(ret.policy.stock_share)} > 10%")
    return miss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", help="run only these settings (by name; repeatable)")
    ap.add_argument("--train-only", action="store_true", help="train (and cache) the settings, measure nothing")
    ap.add_argument("--final", help="measure this setting on the test rows [935:1045] (the final check)")
    args = ap.parse_args()
    if not SEED_PAIRS.exists():
        raise SystemExit(f"{SEED_PAIRS}: the seed pairs are not beside this checkout")
    data = data_slices()
    names = [args.final] if args.final else args.only
    grid = [s for s in GRID + [RECIPE] if s.name in names] if names else GRID
    if args.train_only:
        for s in grid:
            print(f"{s.name}: {trained(s, data)}", flush=True)
        return
    split = "test" if args.final else "val"
    t0 = time.perf_counter()
    rows = []
    for s in grid:
        rows.append(row_for(s, data, split))
        print(f"{s.name}: measured ({time.perf_counter() - t0:.0f} s so far)", file=sys.stderr, flush=True)
    where = "test rows [935:1045] (final check)" if args.final else "validation rows [1045:]"
    print(f"SmolLM2-135M-Instruct, DPO on the recipe's 929 training pairs (one epoch, batch 8, sum of log-probs, "
          f"linear decay, clipping 1.0), measured on the {where}; answers greedy, 128 tokens, through the chat "
          "template; judge: the embedded SmolLM2 from token probabilities\n")
    print(table(rows))
    print()
    for r in rows:
        v = r.results.headline.validation
        miss = meets(r)
        print(f"{r.name}: " + ("meets the goals" if not miss else "misses: " + "; ".join(miss))
              + (f"; trained in {r.seconds / 60:.0f} min" if r.seconds else "")
              + (f"; judge rule {v.rule}, validation {pct(v.accuracy)} "
                 f"[{pct(v.ci_low)}, {pct(v.ci_high)}], debiased {pct(v.debiased_accuracy)} "
                 f"[{pct(v.debiased_ci_low)}, {pct(v.debiased_ci_high)}], mean position term "
                 f"{v.mean_position if v.mean_position is None else round(v.mean_position, 2)}" if v else ""))
    good = [r for r in rows if not meets(r)]
    if good and not args.final:
        best = max(good, key=lambda r: (r.results.retention.kept or 0) + r.reward_chat.accuracy)
        print(f"\nchosen: {best.name} ({best.settings})")
    elif not args.final:
        print("\nno setting meets every goal: choose by the table (the README says what was chosen and why)")
    if not args.final:
        from trainer.config import TrainConfig

        d = TrainConfig()
        print(f"the trainer's defaults: lr {d.lr:g}, beta {d.beta:g}, rpo_alpha {d.rpo_alpha:g}, prompt_format "
              f"{d.prompt_format} (Alpaca rows as a chat turn for a chat model), logp_average {d.logp_average}, "
              f"schedule {d.schedule}, max_grad_norm {d.max_grad_norm:g}")


if __name__ == "__main__":
    main()
