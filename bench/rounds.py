"""Rounds benchmark (issue 17): does training again on the model's own answers, ranked by a judge, keep helping?

SmolLM2-135M-Instruct is round 0 (the SFT model). Round 1 trains it with DPO on the seed's training pairs
(rows ``[:935]`` of ``../shared/seed-data/instruction-data-with-preference.json``). Each round k ≥ 2 does what
``prefloop run`` with ``[run] rounds`` does, through the same stage functions (``loop.rounds``): the round-(k−1)
model answers a fresh slice of the training prompts ``--samples`` times (local batched generation, the trainer's
prompt rendering), the ``python:bench.judges.seed_axis:score`` judge (``bench/judges/seed_axis.py``: the
Bradley–Terry model of the seed's axis fitted on the training rows only, 94.5 % on the validation pairs; the same
judge as ``bench/alignment.py``'s) ranks them best against worst, ties dropped, and the model trains from the
round-(k−1) model as its own reference. Every round is judged on the validation rows ``[1045:]`` (never the test
rows) against the SFT model and against the previous round, by the same judge, with the retention figures.

Printed per round: win rate vs SFT and vs the previous round with 95 % intervals, content kept, the share of
answers opening with one stock phrase, loops, and the cost of each part: sampling + ranking (and within it the
time with a sample, or a score, in flight), training, judging.
The SFT model is measured in the same run (round 1's verdict is against it). The goals: each round beats the
previous one (interval above 50 %), round 3 beats round 1, content kept ≥ 0.95, stock openings ≤ 10 %.

    nice -n 10 .venv/bin/python bench/rounds.py                       # 3 rounds, defaults below
    nice -n 10 .venv/bin/python bench/rounds.py --round1 rpo1-chat
                                                                      # round 1 = the defaults' model, trained already
    nice -n 10 .venv/bin/python bench/rounds.py --rounds 2 --prompts-per-round 32 --val-limit 20  # smaller

Round 1 is the plain ``prefloop train`` (the trainer's defaults: lr 5e-6, RPO weight 1, chat rendering, one epoch of
117 steps). Rounds 2 and on keep those settings but the learning rate, ``--lr`` (default 1e-5, ``[rounds] lr`` in
``prefloop run``): a round's 160 prompts give about 20 steps, a sixth of round 1's.

Everything is written under ``$PREFLOOP_CACHE/bench/rounds`` (``~/.cache/prefloop``); a rerun resumes each stage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
JUDGE = "python:bench.judges.seed_axis:score"


def out_root() -> Path:
    from prefloop.models import cache_dir

    return cache_dir() / "bench" / "rounds"


def slices(val_limit: int) -> dict[str, Path]:
    from bench.judges.seed_axis import seed_pairs_path

    rows = json.loads(seed_pairs_path().read_text())
    folder = out_root() / "data"
    folder.mkdir(parents=True, exist_ok=True)
    val = rows[1045:][:val_limit]
    files = {"train": (rows[:935], "train.json"), "val": (val, "val.json"),
             "val_prompts": ([{k: r[k] for k in ("instruction", "input", "output")} for r in val], "val-prompts.json"),
             "train_prompts": ([{k: r[k] for k in ("instruction", "input", "output")} for r in rows[:935]],
                               "train-prompts.json")}
    out = {}
    for name, (data, file) in files.items():
        (folder / file).write_text(json.dumps(data))
        out[name] = folder / file
    return out


def train(model: str, data: Path, out: Path, args: argparse.Namespace, lr: float = 0.0) -> tuple[str, float]:
    from rich.console import Console

    from prefloop.fingerprint import file_hash
    from trainer.config import TrainConfig
    from trainer.dpo import train as dpo

    lr = {"lr": lr} if lr else {}     # else the trainer's default, as `prefloop train` has it
    cfg = TrainConfig(model=model, data=str(data), output_dir=str(out), batch_size=8, epochs=1.0, seed=42,
                      dtype="fp32", max_length=1024, **lr, live=False, threads=args.threads,
                      max_steps=args.max_steps, resume=(out / "checkpoints").exists())
    trained_on, pairs_hash = out / "pairs.sha256", file_hash(data)   # what the cached model was trained on
    if (out / "final" / "config.json").exists():
        if trained_on.exists() and trained_on.read_text() != pairs_hash:
            raise SystemExit(f"{out} holds a model trained on other pairs than {data} holds now (the opening guard "
                             "changed?): pass --name to keep this run apart, or delete the folder to train again")
        return str(out / "final"), 0.0
    t0 = time.perf_counter()
    result = dpo(cfg, Console(stderr=True))
    if not result.complete:
        raise SystemExit(f"training {out} stopped: {result.reason}")
    trained_on.write_text(pairs_hash)
    return str(out / "final"), time.perf_counter() - t0


def judge(policy: str, reference: str, data: dict[str, Path], out: Path, args: argparse.Namespace) -> float:
    from judge.config import JudgeConfig
    from judge.evaluate import evaluate

    cfg = JudgeConfig(policy=policy, reference=reference, prompts=str(data["val_prompts"]), judges=[JUDGE],
                      validate=str(data["val"]), output_dir=str(out), max_tokens=args.max_tokens, batch_size=8,
                      prompt_format="auto", n_boot=1000, quiet=True, cache=str(out_root() / "judge-cache.sqlite"))
    t0 = time.perf_counter()
    evaluate(cfg)
    return time.perf_counter() - t0


def sample_and_rank(k: int, prev: str, prompts: list[dict], out: Path, args: argparse.Namespace
                    ) -> tuple[Path, dict[str, float]]:
    """Round k's pairs, and the time: in all, and with a sample (answer) or a score (rank) in flight."""
    from generator.config import GenerateConfig
    from generator.run import generate

    source = out / "prompts.json"
    source.write_text(json.dumps(prompts))
    cfg = GenerateConfig(strategy="rank", models=[f"local:{prev}"], judge=JUDGE, k=args.samples,
                         rank_temperature=args.temperature, min_margin=0.0, source=str(source),
                         output=str(out / "pairs.jsonl"), max_tokens=args.max_tokens, seed=1000 * k, round=k,
                         prompt_format="auto", concurrency=8, quiet=True)
    t0 = time.perf_counter()
    summary = generate(cfg)
    if summary.status != "complete":  # interrupted or failed: training on part of the round would pass unnoticed
        raise SystemExit(f"round {k}'s sampling stopped ({summary.status}: {summary.reason}); run again to resume")
    busy = summary.busy_s
    return out / "pairs.jsonl", {"sample+rank": time.perf_counter() - t0, "sample": busy.get("answer", 0.0),
                                 "rank": busy.get("score", 0.0)}


def round1_model(spec: str) -> str:
    """``--round1``: a model folder, or the name of a ``bench/alignment.py`` setting (its model, trained there first
    when it is not in that benchmark's cache yet)."""
    import alignment

    if Path(spec).expanduser().exists():
        return str(Path(spec).expanduser())
    names = {s.name: s for s in alignment.SEARCH}
    if spec not in names:
        raise SystemExit(f"--round1 {spec}: neither a model folder nor a setting of bench/alignment.py "
                         f"({', '.join(names)})")
    return str(alignment.trained(names[spec], alignment.data_slices()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--prompts-per-round", type=int, default=160)
    p.add_argument("--val-limit", type=int, default=55)
    p.add_argument("--max-tokens", type=int, default=128, help="new tokens per answer (bench/alignment.py's 128)")
    p.add_argument("--max-steps", type=int, default=0, help="cap training steps per round (0: one epoch)")
    p.add_argument("--lr", type=float, default=1e-5, help="learning rate of rounds 2 and on (round 1: the trainer's "
                   "default, the plain command); 0: the trainer's default")
    p.add_argument("--round1", default="", help="round 1: a model folder trained already on the training rows, or a "
                   "setting of bench/alignment.py (rpo1-chat: the plain command's model, from that benchmark's "
                   "cache), instead of training it here")
    p.add_argument("--name", default="", help="keep this run's rounds apart (under rounds/NAME/), e.g. for another "
                   "--round1; the data slices and the judgment cache are shared")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import random

    from loop.config import RoundsSection
    from loop.rounds import best_round, guard_note, guard_pairs, stop_reason  # the loop's own rules

    data = slices(args.val_limit)
    root = out_root() / args.name if args.name else out_root()
    costs: dict[int, dict[str, float]] = {}
    models = {0: "smollm2"}
    if args.round1:
        models[1], t_train = round1_model(args.round1), 0.0
    else:
        models[1], t_train = train("smollm2", data["train"], root / "r1" / "train", args)
    costs[1] = {"sample+rank": 0.0, "sample": 0.0, "rank": 0.0, "train": t_train,
                "judge": judge(models[1], "smollm2", data, root / "r1" / "judge", args)}
    prompts = json.loads(data["train_prompts"].read_text())
    random.Random(0).shuffle(prompts)
    for k in range(2, args.rounds + 1):
        chunk = prompts[(k - 2) * args.prompts_per_round:(k - 1) * args.prompts_per_round]
        folder = root / f"r{k}"
        folder.mkdir(parents=True, exist_ok=True)
        pairs, t_sample = sample_and_rank(k, models[k - 1], chunk, folder, args)
        limit = RoundsSection().max_stock
        pairs, phrase, dropped = guard_pairs(pairs, limit)   # the loop's own opening guard
        if dropped:
            print(guard_note(k, phrase, dropped, limit), flush=True)
        models[k], t_train = train(models[k - 1], pairs, folder / "train", args, lr=args.lr)
        costs[k] = {**t_sample, "train": t_train,
                    "judge": judge(models[k], "smollm2", data, folder / "judge", args)
                    + judge(models[k], models[k - 1], data, folder / "judge-previous", args)}

    print(f"\nrounds on the seed's validation rows [1045:] ({args.val_limit} prompts), judge {JUDGE}")
    print(f"{'round':>5} {'vs SFT':>22} {'vs previous':>22} {'kept':>6} {'stock':>6} {'loops':>5} "
          f"{'sample+rank s':>13} {'(sample':>7} {'rank)':>6} {'train s':>8} {'judge s':>8}")
    rows, guard = [], RoundsSection()        # the loop's defaults: min_kept 0.95, max_stock 0.10
    for k in range(1, args.rounds + 1):
        row = bench_row(root, k, models[k])
        fmt = lambda c: "—" if c[0] is None else f"{c[0]:.1%} [{c[1]:.1%}, {c[2]:.1%}]"  # noqa: E731
        kept = "—" if row.kept is None else f"{row.kept:.3f}"
        stock = "—" if row.stock_share is None else f"{row.stock_share:.0%}"
        c = costs[k]
        print(f"{k:>5} {fmt(row.vs_sft):>22} {fmt(row.vs_previous):>22} {kept:>6} {stock:>6} {row.loops!s:>5} "
              f"{c['sample+rank']:>13.0f} {c['sample']:>7.0f} {c['rank']:>6.0f} {c['train']:>8.0f} {c['judge']:>8.0f}")
        rows.append(row)
        reason = stop_reason(row, guard)
        if reason:
            print(f"      the loop's stop rule would stop here: {reason}")
    print(f"the loop's result (its best round): round {best_round(rows, guard).round}")
    r3 = root / "r3" / "judge-vs-r1"
    if args.rounds >= 3:
        judge(models[3], models[1], data, r3, args)
        print(f"round 3 vs round 1: {bench_row_folder(r3)}")


def bench_row(root: Path, k: int, model: str):  # noqa: ANN201 - loop.rounds.RoundRow
    from loop.rounds import RoundRow, judged, skill_row

    vs_sft, ret = judged(root / f"r{k}" / "judge")
    vs_prev = vs_sft if k == 1 else judged(root / f"r{k}" / "judge-previous")[0]
    return skill_row(RoundRow(round=k, model=model, vs_sft=vs_sft, vs_previous=vs_prev), ret)


def bench_row_folder(folder: Path) -> str:
    from loop.rounds import judged

    rate, low, high = judged(folder)[0]
    return "—" if rate is None else f"{rate:.1%} [{low:.1%}, {high:.1%}]"


if __name__ == "__main__":
    main()
