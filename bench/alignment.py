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
- the preference win rate by the seed-axis judge (``bench/judges/seed_axis.py``: a Bradley–Terry model of the
  seed's axis fitted on the training rows only, 94.5 % on the validation pairs), per prompt: the trained model's
  answer against the reference's, with a prompt-bootstrap interval;
- unless ``--fast``: the embedded SmolLM2 judge's validation and win rate (only where it validated above chance;
  on the seed's pairs it validates at chance).

Every row is a command a user can run: under the table the benchmark prints, per row, the ``prefloop train`` and
``prefloop judge`` commands whose settings it used (tests/test_bench_alignment.py checks that the printed
commands build the same settings as the benchmark).

Answers are generated greedily, 128 new tokens, through the chat template (``prompt_format = "chat"``): how the
model is used. Trained models, reference log-probs and generated answers are cached under
``$PREFLOOP_CACHE/bench/alignment`` (``~/.cache/prefloop``), so a rerun measures again without training again.
Long CPU work: run it under ``flock /tmp/prefloop-heavy.lock`` on a shared machine.

    .venv/bin/python bench/alignment.py                    # the grid on the validation rows
    .venv/bin/python bench/alignment.py --only rpo1-chat   # one setting
    .venv/bin/python bench/alignment.py --search --fast    # the wider search (β, mean log-probs, steps, epochs)
    .venv/bin/python bench/alignment.py --final rpo1-chat  # the chosen setting on the test rows

The seed pairs are read from ``$PREFLOOP_SEED_PAIRS``, else ``shared/seed-data/`` beside (or above) the checkout.
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
SLICES = {"train": (0, 935), "test": (935, 1045), "val": (1045, None)}
# what every setting shares: the recipe's batch, prefloop's optimisation defaults
COMMON = dict(model="smollm2", batch_size=8, seed=42, dtype="fp32", max_length=1024)
RUNTIME = dict(live=False, threads=2)      # how the benchmark runs, not what it trains
ANSWERS = dict(max_tokens=128, prompt_format="chat", batch_size=8)   # how both models answer


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
    epochs: float = 1.0
    max_steps: int = 0
    # any other trainer setting, as (key, value) pairs: the hook for the objectives and rounds of other branches,
    # e.g. extra=(("loss_type", "simpo"),) once TrainConfig has it
    extra: tuple[tuple[str, Any], ...] = ()

    def train_settings(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("name", "extra")}
        out.update(dict(self.extra))
        return out


# The grid, capped to about an hour of this 2-core machine (one epoch is ~15 minutes of training here, answers
# and judging ~5 more): the trainer's defaults before this benchmark (lr 1e-6, plain DPO, Alpaca text), the NLL anchor (RPO) at the recipe's learning rate in both prompt
# formats, and one step further on the learning rate and on beta in the better format.
GRID = [
    Setting("old-defaults", lr=1e-6, prompt_format="alpaca"),
    Setting("rpo1-alpaca", lr=5e-6, rpo_alpha=1.0, prompt_format="alpaca"),
    Setting("rpo1-chat", lr=5e-6, rpo_alpha=1.0, prompt_format="chat"),
    Setting("rpo1-chat-lr1e-5", lr=1e-5, rpo_alpha=1.0, prompt_format="chat"),
    Setting("rpo1-chat-beta0.3", lr=5e-6, beta=0.3, rpo_alpha=1.0, prompt_format="chat"),
]
RECIPE = Setting("recipe", lr=5e-6, logp_average=True, schedule="constant", max_grad_norm=0.0)
# The wider search around the defaults (rpo1-chat = the trainer's defaults, the plain `prefloop train`): β, the mean
# of token log-probs instead of the sum (with the larger β a mean needs), fewer steps, a second epoch. The other
# branches append their rows here: objectives as extra=(("loss_type", "simpo"),), rounds likewise.
_D = dict(lr=5e-6, rpo_alpha=1.0, prompt_format="chat")
SEARCH = [
    Setting("rpo1-chat", **_D),
    Setting("rpo1-chat-beta0.05", beta=0.05, **_D),
    Setting("rpo1-chat-beta0.5", beta=0.5, **_D),
    Setting("rpo1-chat-mean-beta1", beta=1.0, logp_average=True, **_D),
    Setting("rpo1-chat-60steps", max_steps=60, **_D),
    Setting("rpo1-chat-2epochs", epochs=2.0, **_D),
    Setting("rpo0.5-chat", **{**_D, "rpo_alpha": 0.5}),
    # the NLL term (RPO here, ORPO's own) teaches the dataset answers' length: rpo1-chat answers at 0.40× the
    # reference's words, and the seed-axis judge sums word weights, so short answers lose to it. These rows move
    # the preference without that term (plain DPO, further than old-defaults; SimPO), or with it (ORPO, RPO at a
    # smaller β). SimPO after the paper's small-model settings: β 2.5, γ/β 0.5, lr 1e-6; ORPO: λ (beta) 0.1.
    Setting("dpo-chat-lr3e-6", lr=3e-6, prompt_format="chat"),
    Setting("dpo-chat-lr5e-6-beta0.05", lr=5e-6, beta=0.05, prompt_format="chat"),
    Setting("simpo-chat", lr=1e-6, beta=2.5, prompt_format="chat", extra=(("objective", "simpo"),
                                                                          ("simpo_gamma", 1.25))),
    Setting("simpo-chat-60steps", lr=1e-6, beta=2.5, prompt_format="chat", max_steps=60,
            extra=(("objective", "simpo"), ("simpo_gamma", 1.25))),
    Setting("orpo-chat", lr=8e-6, beta=0.1, prompt_format="chat", extra=(("objective", "orpo"),)),
    Setting("rpo1-chat-lr1e-5-beta0.05", lr=1e-5, beta=0.05, rpo_alpha=1.0, prompt_format="chat"),
    # SimPO further than one epoch at its small learning rate: the one single pass past the chosen side's level
    Setting("simpo-chat-2epochs", lr=1e-6, beta=2.5, prompt_format="chat", epochs=2.0,
            extra=(("objective", "simpo"), ("simpo_gamma", 1.25))),
    # between them: does half an epoch more reach 70 % before the content goes?
    Setting("simpo-chat-1.5epochs", lr=1e-6, beta=2.5, prompt_format="chat", epochs=1.5,
            extra=(("objective", "simpo"), ("simpo_gamma", 1.25))),
    # KTO on the same pairs, each split into a desirable and an undesirable answer (twice the rows, so 233 steps an
    # epoch); β 0.1 and lr 1e-6 as TRL's KTOConfig defaults them
    Setting("kto-chat", lr=1e-6, beta=0.1, prompt_format="chat", extra=(("objective", "kto"),)),
]


def root() -> Path:
    from prefloop.models import cache_dir

    return cache_dir() / "bench" / "alignment"


def data_slices() -> dict[str, Path]:
    """The seed rows sliced into the cache (JSON arrays of Alpaca rows with chosen/rejected)."""
    from bench.judges.seed_axis import seed_pairs_path

    rows = json.loads(seed_pairs_path().read_text())
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

def train_config(setting: Setting, data: dict[str, Path], out: Path) -> Any:
    """What ``setting`` trains with: ``train_command`` prints the same as a command line."""
    from trainer.config import TrainConfig

    return TrainConfig(**COMMON, **RUNTIME, **setting.train_settings(), data=str(data["train"]),
                       eval_data=str(data["val"]), output_dir=str(out))


def train_command(setting: Setting, data: dict[str, Path], out: Path | str) -> str:
    """The ``prefloop train`` command of ``setting``: every setting that differs from the trainer's defaults."""
    from dataclasses import fields

    from trainer.config import TrainConfig

    defaults = TrainConfig()
    wanted = {**COMMON, **setting.train_settings()}
    flags = []
    for f in fields(TrainConfig):
        if f.name in wanted and wanted[f.name] != getattr(defaults, f.name):
            value = wanted[f.name]
            flag = "--" + f.name.replace("_", "-")
            flags.append(flag if value is True else f"--no-{flag[2:]}" if value is False else f"{flag} {value:g}"
                         if isinstance(value, float) else f"{flag} {value}")
    return (f"prefloop train --model {COMMON['model']} --data {data['train']} --eval-data {data['val']} -o {out}"
            + "".join(f" {x}" for x in flags if not x.startswith("--model ")))


def judge_command(model_dir: Path | str, prompts: Path, pairs: Path, out: Path | str, fast: bool) -> str:
    """The ``prefloop judge`` command that makes the row's answers and retention (and, unless ``fast``, the
    embedded judge's validation and win rate)."""
    return (f"prefloop judge --policy {model_dir} --reference smollm2 --prompts {prompts} --judge local:smollm2 "
            f"--validate {pairs} --prompt-format {ANSWERS['prompt_format']} --max-tokens {ANSWERS['max_tokens']} "
            f"--no-score-known-good -o {out}" + ("   # answers and retention only: stop it after the answers"
                                                  if fast else ""))


def train_dir(setting: Setting, data: dict[str, Path]) -> Path:
    from prefloop.records import stable_id

    key = stable_id(COMMON, setting.train_settings(), data["train"].stat().st_size)
    return root() / "train" / f"{setting.name}-{key[:8]}"


def trained(setting: Setting, data: dict[str, Path]) -> Path:
    """The final model of ``setting`` (trained once, then read from the cache)."""
    from rich.console import Console

    from trainer.dpo import train

    out = train_dir(setting, data)
    if (out / "final" / "config.json").exists():
        return out / "final"
    cfg = train_config(setting, data, out)
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
    from trainer.data import load_pairs
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
class Axis:
    """The seed-axis judge's win rate of the trained model's answers over the reference's (per prompt: the higher
    score wins, equal scores tie), with its prompt-bootstrap interval; ``no_length`` the same from the judge fitted
    without its length features; ``equal_length`` with both answers cut to the shorter one's words (the judge sums
    word weights, so a much longer answer collects more of them: the seed's pairs, which it was fitted and
    validated on, are rewrites of one length, trained answers are not)."""

    rate: float
    ci_low: float
    ci_high: float
    wins: int
    ties: int
    losses: int
    no_length: float
    equal_length: float
    equal_ci_low: float
    equal_ci_high: float


def cut_to_equal(a: str, b: str) -> tuple[str, str]:
    """Both answers cut to the word count of the shorter one."""
    wa, wb = a.split(), b.split()
    n = min(len(wa), len(wb))
    return " ".join(wa[:n]), " ".join(wb[:n])


def axis_win_rate(answers: list[Any], split_seed: int = 0) -> Axis:
    from bench.judges.seed_axis import load_or_fit, TRAIN
    from bench.judges.seed_axis import seed_pairs_path
    from judge.stats import summarize

    train_rows = json.loads(seed_pairs_path().read_text())[TRAIN]
    out = {}
    for name, length, cut in (("all", True, False), ("no_length", False, False), ("equal", True, True)):
        m = load_or_fit(train_rows, length=length)
        outcomes = []
        for a in answers:
            pa, ra = cut_to_equal(a.policy_answer, a.reference_answer) if cut else (a.policy_answer,
                                                                                     a.reference_answer)
            p, r = m.score(pa), m.score(ra)
            outcomes.append("win" if p > r else "loss" if p < r else "tie")
        out[name] = summarize(outcomes, seed=split_seed)
    w, e = out["all"], out["equal"]
    return Axis(w.rate, w.ci_low, w.ci_high, w.wins, w.ties, w.losses, out["no_length"].rate, e.rate, e.ci_low,
                e.ci_high)


def data_ceiling(answers: list[Any], pairs: Path) -> dict[str, Axis]:
    """The seed's own answers to the same prompts (``chosen``, ``rejected``) against the reference's, by the same
    judge: what a model that answered exactly like the training data's chosen side would score. Pairs are matched
    to answers by their dataset ``output`` (the answers' known-good text)."""
    from types import SimpleNamespace

    by_output = {r["output"].strip(): r for r in reversed(json.loads(pairs.read_text()))}
    matched = [(by_output[a.known_good.strip()], a) for a in answers if a.known_good and
               a.known_good.strip() in by_output]
    return {side: axis_win_rate([SimpleNamespace(policy_answer=r[side], reference_answer=a.reference_answer)
                                 for r, a in matched]) for side in ("chosen", "rejected")}


@dataclass
class Row:
    """One line of the table."""

    name: str
    settings: dict[str, Any]
    reward_chat: Preference | None = None
    reward_alpaca: Preference | None = None
    retention: Any = None                     # judge.results.Retention
    axis: Axis | None = None
    embedded: Any = None                      # judge.results.JudgeSummary of the embedded judge (not with --fast)
    seconds: float | None = None
    steps: int | None = None
    commands: list[str] = field(default_factory=list)
    answers: list[Any] = field(default_factory=list, repr=False)


def eval_dir(name: str, model_dir: Path, split: str) -> Path:
    from prefloop.records import stable_id

    return root() / "eval" / split / f"{name}-{stable_id(str(model_dir))[:8]}"


def measure(name: str, model_dir: Path, pairs: Path, split: str, fast: bool) -> tuple[Any, list[Any], Any]:
    """Answers through the chat template and retention, ``prefloop judge``'s own path (answers resume from the eval
    folder; the reference's answers are shared); unless ``fast`` also the embedded judge's validation and win rate.
    Returns (retention, answers, the embedded judge's summary or None)."""
    import shutil

    from judge.config import JudgeConfig
    from judge.evaluate import evaluate, load_eval_prompts
    from judge.answers import generate_answers
    from judge.retention import retention

    out = eval_dir(name, model_dir, split)
    shared = root() / "eval" / split / "gen-reference.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    if shared.exists() and not (out / "gen-reference.jsonl").exists():
        shutil.copy(shared, out / "gen-reference.jsonl")
    cfg = JudgeConfig(policy=str(model_dir), reference="smollm2", prompts=str(prompts_file(pairs)),
                      judges=["local:smollm2"], validate=str(pairs), output_dir=str(out),
                      cache=str(root() / "judge-cache.sqlite"), score_known_good=False, quiet=True, **ANSWERS)
    if fast:
        records, _ = load_eval_prompts(cfg)
        answers, _, _ = generate_answers(cfg, records)
        ret, summary = retention(answers, n_boot=cfg.n_boot, seed=cfg.bootstrap_seed), None
    else:
        results = evaluate(cfg)
        from judge.results import read_answers

        answers, ret, summary = read_answers(out / "answers.jsonl"), results.retention, results.headline
    if not shared.exists():
        shutil.copy(out / "gen-reference.jsonl", shared)
    return ret, answers, summary


def row_for(setting: Setting, data: dict[str, Path], split: str, fast: bool) -> Row:
    model_dir = trained(setting, data)
    pairs = data[split]
    row = Row(setting.name, setting.train_settings())
    info = model_dir.parent / "bench.json"
    if info.exists():
        facts = json.loads(info.read_text())
        row.seconds, row.steps = facts["seconds"], facts.get("steps")
    from trainer.objectives import OBJECTIVES

    # per-token means where the objective itself averages (SimPO, ORPO), else as the setting says
    spec = OBJECTIVES[setting.train_settings().get("objective", "dpo")]
    average = setting.logp_average if spec.average is None else spec.average
    row.reward_chat = reward_accuracy(model_dir, pairs, "chat", average)
    row.reward_alpaca = reward_accuracy(model_dir, pairs, "alpaca", average)
    row.retention, answers, row.embedded = measure(setting.name, model_dir, pairs, split, fast)
    row.axis = axis_win_rate(answers)
    row.answers = answers
    row.commands = [train_command(setting, data, model_dir.parent),
                    judge_command(model_dir, prompts_file(pairs), pairs, eval_dir(setting.name, model_dir, split),
                                  fast)]
    return row


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f}%"


def table(rows: list[Row]) -> str:
    """The grid as a Markdown table (the README keeps a copy)."""
    from trainer.objectives import OBJECTIVES

    head = ("| setting | objective | lr | β | rpo_α | Σ/mean | steps | trained as | reward acc (chat / alpaca) | chosen logp/token "
            "| content recall (kept) | ROUGE-L | stock opening | loops | length × | seed-axis win rate [95% CI] "
            "| embedded judge acc: win rate |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    ref = rows[0].retention.reference if rows and rows[0].retention else None
    if ref is not None:
        lines.append(f"| reference (SFT) | | | | | | | | | {rows[0].reward_chat.chosen_logp_reference:.2f} | "
                     f"{ref.content_recall:.3f} | {ref.rouge_l:.3f} | {pct(ref.stock_share)} | {ref.loops} | 1.00 | "
                     f"| |")
    for r in rows:
        ret, s, a = r.retention, r.settings, r.axis
        if r.embedded is None or r.embedded.validation is None:
            judge = "— (--fast)"
        else:
            v = r.embedded.validation
            judge = f"{pct(v.rule_accuracy)}: " + (pct(r.embedded.win_rate) if v.above_chance else "— (at chance)")
        axis = "—" if a is None else f"{pct(a.rate)} [{pct(a.ci_low)}, {pct(a.ci_high)}]"
        steps = r.steps if r.steps else (s["max_steps"] or f"{s['epochs']:g} ep")
        spec = OBJECTIVES[s.get("objective", "dpo")]
        objective = spec.name + (f" γ {s['simpo_gamma']:g}" if "simpo_gamma" in spec.settings else "")
        average = s["logp_average"] if spec.average is None else spec.average
        rpo = f"{s['rpo_alpha']:g}" if "rpo_alpha" in spec.settings else "—"
        lines.append(f"| {r.name} | {objective} | {s['lr']:g} | {s['beta']:g} | {rpo} | "
                     f"{'mean' if average else 'Σ'} | {steps} | {s['prompt_format']} | "
                     f"{pct(r.reward_chat.accuracy)} / {pct(r.reward_alpaca.accuracy)} | "
                     f"{r.reward_chat.chosen_logp:.2f} | {ret.policy.content_recall:.3f} ({pct(ret.kept)}) | "
                     f"{ret.policy.rouge_l:.3f} | {pct(ret.policy.stock_share)} | {ret.policy.loops} | "
                     f"{ret.length_ratio:.2f} | {axis} | {judge} |")
    return "\n".join(lines)


def meets(r: Row) -> list[str]:
    """The issue's goals this setting misses (empty: all met): skill kept (≥ 95 % of the content, ≤ 10 % stock
    openings) and the preference clearly moved (the seed-axis judge's win rate ≥ 70 % with its interval above 60 %)."""
    ret, a = r.retention, r.axis
    miss = []
    if ret.kept is None or ret.kept < 0.95:
        miss.append(f"content kept {pct(ret.kept)} < 95%")
    if ret.policy.stock_share > 0.10:
        miss.append(f"stock opening {pct(ret.policy.stock_share)} > 10%")
    if a is None or a.rate < 0.70 or a.ci_low <= 0.60:
        miss.append("seed-axis win rate " + ("—" if a is None else f"{pct(a.rate)} [{pct(a.ci_low)}, "
                                              f"{pct(a.ci_high)}]") + " < 70% or interval not above 60%")
    return miss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", help="run only these settings (by name; repeatable)")
    ap.add_argument("--search", action="store_true", help="the wider search (SEARCH) instead of the first grid")
    ap.add_argument("--fast", action="store_true", help="no embedded judge: answers, retention, seed-axis judge")
    ap.add_argument("--train-only", action="store_true", help="train (and cache) the settings, measure nothing")
    ap.add_argument("--final", help="measure this setting on the test rows [935:1045] (the final check)")
    ap.add_argument("--threads", type=int, default=RUNTIME["threads"],
                    help="torch threads (1 when another job shares the cores: two threads on two busy cores wait "
                         "on each other); not part of what a row trains, so a cached model is reused")
    args = ap.parse_args()
    RUNTIME["threads"] = args.threads
    from bench.judges.seed_axis import seed_pairs_path

    try:
        seed_pairs_path()
    except FileNotFoundError as exc:
        raise SystemExit(str(exc))
    data = data_slices()
    names = [args.final] if args.final else args.only
    everything = list({s.name: s for s in GRID + SEARCH + [RECIPE]}.values())
    grid = [s for s in everything if s.name in names] if names else SEARCH if args.search else GRID
    if args.train_only:
        for s in grid:
            print(f"{s.name}: {trained(s, data)}", flush=True)
        return
    split = "test" if args.final else "val"
    t0 = time.perf_counter()
    rows = []
    for s in grid:
        rows.append(row_for(s, data, split, args.fast))
        print(f"{s.name}: measured ({time.perf_counter() - t0:.0f} s so far)", file=sys.stderr, flush=True)
    where = "test rows [935:1045] (final check)" if args.final else "validation rows [1045:]"
    print(f"SmolLM2-135M-Instruct, DPO on the recipe's 929 training pairs (batch 8, linear decay, clipping 1.0), "
          f"measured on the {where}; answers greedy, {ANSWERS['max_tokens']} tokens, through the chat template; "
          "seed-axis judge: bench/judges/seed_axis.py (fitted on rows [:935] only)\n")
    print(table(rows))
    print("\nThe commands behind each row (the data slices are the seed's rows, cut into the cache):")
    for r in rows:
        print(f"- {r.name}:")
        for c in r.commands:
            print(f"    {c}")
    print()
    for r in rows:
        miss = meets(r)
        v = r.embedded.validation if r.embedded is not None else None
        print(f"{r.name}: " + ("meets the goals" if not miss else "misses: " + "; ".join(miss))
              + (f"; trained in {r.seconds / 60:.0f} min" if r.seconds else "")
              + (f"; seed-axis {r.axis.wins} W / {r.axis.ties} T / {r.axis.losses} L, without its length features "
                 f"{pct(r.axis.no_length)}, both answers cut to equal length {pct(r.axis.equal_length)} "
                 f"[{pct(r.axis.equal_ci_low)}, {pct(r.axis.equal_ci_high)}]" if r.axis else "")
              + (f"; per prompt kept more on {r.retention.better}, less on {r.retention.worse}")
              + (f"; embedded judge rule {v.rule}, validation {pct(v.accuracy)} [{pct(v.ci_low)}, {pct(v.ci_high)}]"
                 if v else ""))
    if rows:
        for side, a in data_ceiling(rows[0].answers, data[split]).items():
            print(f"the seed's {side} answers against the reference's, same judge: {pct(a.rate)} [{pct(a.ci_low)}, "
                  f"{pct(a.ci_high)}] ({a.wins} W / {a.ties} T / {a.losses} L), equal length {pct(a.equal_length)}")
    good = [r for r in rows if not meets(r)]
    if good and not args.final:
        best = max(good, key=lambda r: (r.retention.kept or 0) + r.axis.rate)
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
