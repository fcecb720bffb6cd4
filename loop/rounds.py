"""Rounds: the loop that feeds itself (``[run] rounds = N``; 1, the default, is the one-pass loop unchanged).

Round 1 is the loop's own stages: the writer's pairs, the split, training from the SFT model, the verdict. Each
round k ≥ 2 then

1. **samples**: the round-(k−1) model answers the round's prompts ``[rounds] samples`` times each, through the
   generator's ``rank``/``contrast`` strategies with the trainer's prompt rendering: with ``[export] ollama`` the
   server answers, from the round's model exported as ``<ollama>-round<k−1>`` (stage ``round<k−1>/export``);
   otherwise local batched generation does.
   The prompts are a fresh slice of the training prompts per round, or all of them again; the held-out prompts
   never reach a round;
2. **pairs** them: ``rank`` scores the samples with the judge (a ``python:``/``reward:`` judge needs no server)
   and pairs the best with the worst, dropping ties; ``contrast`` takes the writer's answer as chosen and the
   round-(k−1) model's own as rejected (with a stronger writer, the judge-free "delta" recipe). Pairs that teach
   one opening for its own sake (over ``max_stock`` of the chosen answers open with it and few rejected ones do,
   or a sign test finds it on the chosen side beyond chance) are dropped before training (``guard_pairs``);
3. **trains** from the round-(k−1) model, which is also its reference (the iterative-DPO standard), or with the
   SFT model as every round's reference (``[rounds] reference = "sft"``; the trainer's ``ref_model``);
4. is **judged** on the same held-out prompts against the SFT model and against the previous round (with
   ``[export] ollama``, all three served, as round 1 is judged).

After each round the **stop rule** ends the run, saying why, when the round does not beat the previous one (its
interval against it contains 50 %) or keeps less than ``min_kept`` of the SFT model's content recall. The best
round (highest win rate against the SFT model among those that kept the skill), not the last, is the run's
result (``RUN/rounds/curve.json``, the report's first table).

Every round's stages are ordinary loop stages (``round2/generate``…) in ``RUN/rounds/k/``: fingerprinted, resumed
where a killed run stopped, and rerun from the round whose settings or inputs changed (each round's inputs hold
the previous round's training fingerprint, so a change reruns that round onward).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from loop.config import RoundsSection, RunPaths
from prefloop.config import ConfigError, fingerprinted
from prefloop.files import atomic_write_json
from prefloop.fingerprint import file_hash, fingerprint, model_identity
from prefloop.jsonl import read_jsonl, write_jsonl
from prefloop.report import pct


def round_paths(run_dir: Path, k: int) -> RunPaths:
    """Round k's folder: ``RUN/rounds/k`` (round 1 is the run folder itself)."""
    return RunPaths(Path(run_dir)) if k == 1 else RunPaths(Path(run_dir) / "rounds" / str(k))


def prompt_slice(prompts: list[Any], k: int, rounds: int, how: str, seed: int) -> list[Any]:
    """Round k's prompts: all of them, or the (k−1)-th of ``rounds − 1`` disjoint slices of a seeded shuffle."""
    if how == "all" or rounds <= 2:
        return list(prompts)
    order = list(prompts)
    random.Random(seed).shuffle(order)
    n = rounds - 1
    return order[(k - 2) * len(order) // n: (k - 1) * len(order) // n]


@dataclass
class RoundRow:
    """One round on the curve: win rates (with intervals) against the SFT model and the previous round, and the
    skill its held-out answers keep."""

    round: int
    model: str
    vs_sft: list[float | None]          # win rate, interval low, high
    vs_previous: list[float | None]
    kept: float | None = None
    stock_share: float | None = None
    loops: int | None = None
    mean_chars: float | None = None
    pairs: int | None = None
    reward_accuracy: float | None = None   # held-out reward accuracy of the round's training (no judge)
    stock_opening: str | None = None       # the opening most of its answers share
    sft_stock_share: float | None = None   # the SFT model's share on the same prompts
    dropped: int | None = None             # sampled pairs the opening guard kept out of training (guard_pairs)
    dropped_opening: str | None = None     # the opening their chosen answers taught

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def held_out_reward_accuracy(train_dir: Path) -> float | None:
    """The trainer's last held-out reward accuracy (its final eval on the held-out pairs), for the headline: the
    preference figure that needs no judge."""
    path = train_dir / "metrics.jsonl"
    rows = [r for r in _metrics(path) if r["split"] == "eval"] if path.exists() else []
    value = rows[-1].get("rewards/accuracies") if rows else None
    return float(value) if isinstance(value, (int, float)) else None


def _metrics(path: Path) -> list[dict[str, Any]]:
    from trainer.report import read_metrics

    return read_metrics(path)


def judged(folder: Path) -> tuple[list[float | None], Any]:
    from judge.results import JudgeResults

    res = JudgeResults.read(folder / "results.json")
    if res is None or res.headline is None:
        return [None, None, None], None
    h = res.headline
    return [h.win_rate, h.ci_low, h.ci_high], res.retention


def round_row(run_dir: Path, k: int, model: str) -> RoundRow:
    paths = round_paths(run_dir, k)
    vs_sft, ret = judged(paths.judge)
    vs_prev = vs_sft if k == 1 else judged(paths.root / "judge-previous")[0]
    row = RoundRow(round=k, model=model, vs_sft=vs_sft, vs_previous=vs_prev,
                   reward_accuracy=held_out_reward_accuracy(paths.train))
    if k == 1:
        row.pairs = sum(1 for _ in paths.train_pairs.open()) if paths.train_pairs.exists() else None
    elif guarded_path(paths.pairs).exists():
        from judge.retention import opening

        kept = {r["id"] for r in read_jsonl(guarded_path(paths.pairs))}
        gone = [r for r in read_jsonl(paths.pairs) if r["id"] not in kept]
        row.pairs, row.dropped = len(kept), len(gone)
        row.dropped_opening = opening(gone[0]["chosen"]) if gone else None
    return skill_row(row, ret)


def guarded_path(pairs: Path) -> Path:
    """Where ``guard_pairs`` writes the pairs a round trains on, beside the pairs it sampled."""
    return pairs.with_name(pairs.stem + ".trained.jsonl")


def guard_pairs(pairs: Path, max_stock: float) -> tuple[Path, str | None, int]:
    """The round's pairs without those that teach one opening for its own sake (``judge.retention.taught_opening``
    at ``[rounds] max_stock``: the chosen answer opens with it and the rejected one does not), written beside the
    sampled pairs (which stay as they were); the file to train on, the opening and how many pairs were dropped.
    The stop rule catches a round whose answers collapsed onto a phrase; this keeps the next round from learning
    it from the judge's taste in the first place."""
    from judge.retention import opening, taught_opening

    rows = list(read_jsonl(pairs))
    phrase = taught_opening([r["chosen"] for r in rows], [r["rejected"] for r in rows], max_stock)
    keep = [r for r in rows if phrase is None or not (opening(r["chosen"]) == phrase != opening(r["rejected"]))]
    out = guarded_path(pairs)
    write_jsonl(out, keep)
    return out, phrase, len(rows) - len(keep)


def guard_note(k: int, phrase: str | None, dropped: int, max_stock: float) -> str:
    """The line that says what ``guard_pairs`` kept out of round ``k``."""
    from judge.retention import TAUGHT_P

    return (f"round {k}: {dropped} pairs dropped whose chosen answer opens with \"{phrase} …\" and whose rejected "
            f"one does not: the judge picks that opening for its own sake (over [rounds] max_stock = {max_stock:.0%} "
            "of the chosen answers open so, or the chosen side has it more often than chance: sign test, "
            f"p < {TAUGHT_P}), and they would train the phrase, not the answers")


def skill_row(row: RoundRow, ret: Any) -> RoundRow:
    """The row with the skill its held-out answers kept (a ``judge.results`` Retention, or None: not judged)."""
    if ret is None:
        return row
    pol = ret.policy
    return replace(row, kept=ret.kept, stock_share=pol.stock_share, loops=pol.loops, mean_chars=pol.mean_chars,
                   stock_opening=pol.stock_opening, sft_stock_share=ret.reference.stock_share)


def collapsed(row: RoundRow, max_stock: float) -> bool:
    """Its answers collapsed onto one stock phrase (``judge.retention.stock_collapse`` at ``[rounds] max_stock``)."""
    from judge.retention import stock_collapse

    return row.stock_share is not None and stock_collapse(row.stock_share, row.sft_stock_share or 0.0, max_stock)


def stop_reason(row: RoundRow, guard: RoundsSection) -> str | None:
    """Why the run stops after this round, or None: it lost the skill (``guard.min_kept``), its answers collapsed
    onto one stock phrase (``guard.max_stock``), or it does not beat the previous round. Round 1 is compared with
    the SFT model only for the skill."""
    if row.kept is not None and row.kept < guard.min_kept:
        return (f"round {row.round} keeps {row.kept:.0%} of the SFT model's content recall, below [rounds] "
                f"min_kept = {guard.min_kept:.0%}")
    if collapsed(row, guard.max_stock):
        return (f"round {row.round}'s answers collapse onto one stock phrase: {row.stock_share:.0%} open with "
                f"\"{row.stock_opening} …\" (the SFT model's: {row.sft_stock_share or 0:.0%}; [rounds] max_stock = "
                f"{guard.max_stock:.0%}): the judge rewards the phrase, not the answers")
    rate, low, high = row.vs_previous
    if row.round > 1 and rate is not None and low is not None and low <= 0.5:
        return (f"round {row.round} does not beat round {row.round - 1}: win rate {rate:.0%}, interval "
                f"[{low:.0%}, {high:.0%}] contains or falls below 50 %")
    return None


def best_round(rows: list[RoundRow], guard: RoundsSection) -> RoundRow:
    """The round with the highest win rate against the SFT model among those that kept the skill and did not
    collapse onto a stock phrase (round 1 when none did); ties go to the earlier round."""
    ok = [r for r in rows if (r.kept is None or r.kept >= guard.min_kept) and not collapsed(r, guard.max_stock)]
    return max(ok or rows[:1], key=lambda r: (r.vs_sft[0] if r.vs_sft[0] is not None else -1.0, -r.round))


def round_train_config(cfg: Any, prev: str, pairs: Path, out: Path) -> Any:  # a LoopConfig -> a TrainConfig
    """Round k's trainer settings: ``[train]``'s, from the round-(k−1) model on the round's pairs, at ``[rounds] lr``
    when set, with the SFT model as the reference when ``[rounds] reference = "sft"``."""
    t = replace(cfg.train, model=prev, data=str(pairs), output_dir=str(out))
    if cfg.rounds.lr:
        t = replace(t, lr=cfg.rounds.lr)
    if cfg.rounds.reference == "sft" and prev != str(cfg.train.model):  # round 1 starts from the SFT model
        t = replace(t, ref_model=str(cfg.train.model))
    return t


class Rounds:
    """Rounds 2..N of a loop (see the module docstring), run through the loop's own stage machinery."""

    def __init__(self, loop: Any):  # a loop.stages.Loop (not imported: loop.stages imports this module)
        self.loop = loop
        self.cfg = loop.cfg
        self.r: RoundsSection = loop.cfg.rounds
        self.n = loop.cfg.run.rounds

    def ranker(self) -> str:
        return self.ranker_of(self.cfg)

    @staticmethod
    def ranker_of(cfg: Any) -> str:
        """Who ranks the samples: ``[rounds] judge``, else the first judge that is not a person ("" for contrast
        pairing, which needs none); a ConfigError when rank pairing has no one."""
        if cfg.rounds.pairing != "rank":
            return ""
        judge = cfg.rounds.judge or next((str(j) for j in cfg.judge_specs() if not j.person), "")
        if not judge:
            raise ConfigError(f"{cfg.path} [rounds] judge: rank pairing needs a judge that is not a person "
                              "(python:MODULE:FUNCTION needs no server)")
        return judge

    def training_prompts(self) -> list[Any]:
        """The loop's prompts minus the held-out ones (those never reach a round)."""
        from loop.split import split_key
        from prefloop.sources import load_prompts

        held, _ = load_prompts(self.loop.paths.heldout_prompts)
        out = {split_key(p.prompt) for p in held}
        return [p for p in self.loop.prompts() if split_key(p.prompt) not in out]

    def model_of(self, k: int) -> str:
        if k == 1:
            return self.loop.final_model() or str(self.loop.paths.final)
        return str(round_paths(self.loop.run_dir, k).final)

    def trained(self, k: int) -> str:
        """Round k's training fingerprint (what its model is made of)."""
        return self.loop.fps.get("train" if k == 1 else f"round{k}/train", "")

    def serve(self, k: int) -> str:
        """With ``[export] ollama``: round k's model created on the server as ``<ollama>-round<k>`` (stage
        ``round<k>/export``, redone when round k's training changes) and the client spec that asks the server for
        it; "" without (then the rounds sample and judge the model folders locally). Each round has a name of its
        own: ``<ollama>`` itself ends up holding the best round."""
        e, loop = self.cfg.export, self.loop
        if not e.ollama:
            return ""
        name = f"{e.ollama}-round{k}"
        stage = f"round{k}/export"
        if stage not in loop.fps:   # round k's export runs once per run: after its training, or before round 2
            folder = loop.run_dir / "rounds" / str(k) / "export"
            model = self.model_of(k)
            loop.settings[stage] = fingerprinted(e)

            def work(decision: str) -> Any:
                from loop.export import export_model

                return export_model(replace(e, model=model, ollama=name, adapter=False, output_dir=str(folder)),
                                    loop.say)

            rel = folder.relative_to(loop.run_dir).as_posix()
            loop._stage(stage, {"trained": self.trained(k), "model": name}, [rel, f"{rel}/export.json"], work)
        rec = loop.state.get(stage)
        host = (rec.info if rec else {}).get("host") or e.host   # the server it was created on, whatever else
        return f"ollama:{name}@{host}" if host else e.served(name)  # [generate] hosts names for the writer

    def run(self) -> list[RoundRow]:
        rows = [round_row(self.loop.run_dir, 1, self.model_of(1))]
        stop = stop_reason(rows[0], self.r)
        for k in range(2, self.n + 1):
            if stop:
                break
            self.one(k)
            rows.append(round_row(self.loop.run_dir, k, self.model_of(k)))
            stop = stop_reason(rows[-1], self.r)
        best = best_round(rows, self.r)
        if stop:
            self.loop.warn(f"rounds stopped: {stop}")
        self.loop.say(f"[bold]rounds:[/bold] best is round {best.round} ({best.model})")
        atomic_write_json(self.loop.run_dir / "rounds" / "curve.json",
                          {"rounds": [r.to_json() for r in rows], "best": best.round, "best_model": best.model,
                           "stopped": stop, "planned": self.n})
        if self.cfg.export.ollama:
            self.export_best(best)
        return rows

    def export_best(self, best: RoundRow) -> None:
        """The best round, not the last (nor round 1, which the loop's export stage created), as
        ``[export] ollama`` on the server: a stage of its own (``rounds/export``), redone when the best round or
        its training changes."""
        e, loop = self.cfg.export, self.loop
        folder = loop.run_dir / "rounds" / "export"
        loop.settings["rounds/export"] = fingerprinted(e)
        trained = self.trained(best.round)

        def work(decision: str) -> Any:
            from loop.export import export_model

            return export_model(replace(e, model=best.model, output_dir=str(folder)), loop.say)

        loop._stage("rounds/export", {"best": str(best.round), "trained": trained},
                    ["rounds/export", "rounds/export/export.json"], work)

    def one(self, k: int) -> None:
        """Round k's stages: sample and pair, train, judge against the SFT model and the previous round."""
        loop, prev = self.loop, self.model_of(k - 1)
        paths = round_paths(loop.run_dir, k)
        paths.root.mkdir(parents=True, exist_ok=True)
        prompts = prompt_slice(self.training_prompts(), k, self.n, self.r.prompts, self.r.seed)
        if not prompts:
            loop.stop(f"round {k}: no training prompts left for a fresh slice; set [rounds] prompts = \"all\" or "
                      "add prompts")
        source = paths.root / "prompts.jsonl"
        write_jsonl(source, [p.to_json() for p in prompts])
        upstream = self.trained(k - 1)
        # the reference decides training only (its own fingerprint holds ref_model): sampling is not redone for it
        rounds_settings = fingerprinted(self.r, exclude=("reference",))
        sampler = self.serve(k - 1) or f"local:{prev}"   # the server samples the model it was given, else locally

        gen = self.generate_config(k, sampler, source, paths)
        loop.settings[f"round{k}/generate"] = {"identity": gen.identity(), "rounds": rounds_settings}
        sampled = {"prompts": file_hash(source), "previous": upstream}
        if self.cfg.export.ollama:   # a new export of the previous round (another quantization): new samples
            sampled["export"] = loop.fps.get(f"round{k - 1}/export", "")

        def sample(decision: str) -> Any:
            from generator.run import generate

            result = generate(gen, console=loop.console)
            if not result.interrupted and result.total_in_output == 0:
                why = f"generation stopped: {result.aborted}" if result.aborted else "every sample tied?"
                raise RuntimeError(f"round {k}: no pairs from {sampler} (see {gen.output}.failures.jsonl and its "
                                   f"drops): {why}")
            return result

        loop._stage(f"round{k}/generate", sampled, [f"rounds/{k}/generate"], sample)

        trained_pairs, phrase, dropped = guard_pairs(paths.pairs, self.r.max_stock)
        if dropped and not trained_pairs.stat().st_size:
            loop.stop(f"round {k}: every pair's chosen answer opens with \"{phrase} …\" where its rejected one does "
                      "not: the round would train the phrase, not the answers (a judge that rewards it, or a model "
                      "that answers every prompt alike); [rounds] max_stock = 1 trains on them anyway")
        if dropped:
            loop.console.print(guard_note(k, phrase, dropped, self.r.max_stock))
        t = round_train_config(self.cfg, prev, trained_pairs, paths.train)
        loop.settings[f"round{k}/train"] = fingerprinted(t)
        inputs = {"train": file_hash(trained_pairs), "eval": file_hash(loop.paths.heldout_pairs),
                  "model": model_identity(prev), "previous": upstream}
        if t.ref_model:
            inputs["reference"] = model_identity(t.ref_model)
        loop.train_stage(f"round{k}/train", t, paths, inputs)

        # the verdicts ask whoever answers round 1's (the loop's judge stage): the server when it was exported
        e = self.cfg.export
        policy, sft = (self.serve(k), e.served(e.reference_name)) if e.ollama else (str(paths.final),
                                                                                  str(self.cfg.train.model))
        previous = sampler if e.ollama else prev
        base = replace(self.cfg.judge, prompts=str(loop.paths.heldout_prompts), policy=policy,
                       pairs=str(paths.pairs), validate=str(loop.paths.heldout_pairs))
        for name, reference, folder in ((f"round{k}/judge", sft, paths.judge),
                                        (f"round{k}/judge-previous", previous, paths.root / "judge-previous")):
            cfg = replace(base, reference=reference, output_dir=str(folder))
            loop.settings[name] = fingerprinted(cfg)
            inputs = {"trained": self.trained(k), "heldout": file_hash(loop.paths.heldout_prompts),
                      "reference": model_identity(str(self.cfg.train.model) if reference == sft else prev)}
            if e.ollama:   # the answers come from the exported models: a new export, new answers
                inputs["export"] = fingerprint({}, {n: loop.fps.get(n, "") for n in (
                    "export", f"round{k}/export", f"round{k - 1}/export")})
            loop.judge_stage(name, cfg, inputs, folder)

    def generate_config(self, k: int, sampler: str, source: Path, paths: RunPaths) -> Any:
        """Round k's generator: ``sampler`` (the previous round's model: ``local:FOLDER``, or the spec of its
        export on the server) answers."""
        g = self.cfg.generate
        common = dict(source=str(source), output=str(paths.pairs), limit=0, seed=self.r.seed + 1000 * k, round=k)
        if self.r.pairing == "contrast":
            return replace(g, strategy="contrast", sft_model=sampler, temperature=self.r.temperature, **common)
        return replace(g, strategy="rank", models=[sampler], judge=self.ranker(), k=self.r.samples,
                       rank_temperature=self.r.temperature, min_margin=0.0, **common)


def curve(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / "rounds" / "curve.json"
    return json.loads(path.read_text()) if path.exists() else None


def _rate(cell: list[float | None]) -> str:
    rate, low, high = (list(cell) + [None, None, None])[:3]
    return "—" if rate is None else f"{pct(rate, 0)} [{pct(low, 0)}, {pct(high, 0)}]"


def plot_curve(rows: list[dict[str, Any]], out_path: Path) -> Path:
    """Win rate against the SFT model and against the previous round, per round, with their intervals."""
    from prefloop.report import pyplot, save_png

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ks = [r["round"] for r in rows]
    for key, label in (("vs_sft", "vs SFT model"), ("vs_previous", "vs previous round")):
        points = [(k, r[key]) for k, r in zip(ks, rows) if r[key][0] is not None]
        if points:
            xs = [k for k, _ in points]
            ys = [c[0] for _, c in points]
            err = [[c[0] - (c[1] if c[1] is not None else c[0]) for _, c in points],
                   [(c[2] if c[2] is not None else c[0]) - c[0] for _, c in points]]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("round")
    ax.set_ylabel("held-out win rate")
    ax.set_xticks(ks)
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right", fontsize=8)
    return save_png(fig, out_path)


def add_rounds_section(report: Any, run_dir: Path, plots: Path) -> None:
    """The round curve, the report's first table when the run had rounds."""
    data = curve(run_dir)
    if data is None:
        return
    rows = data["rounds"]
    report.heading("Rounds")
    stopped = f" Stopped early: {data['stopped']}." if data.get("stopped") else ""
    report.paragraph(f"{len(rows)} of {data['planned']} planned rounds ran; the run's result is round "
                     f"{data['best']} (`{data['best_model']}`), the best against the SFT model that kept the skill."
                     + stopped)
    report.table([{"round": r["round"], "win rate vs SFT": _rate(r["vs_sft"]),
                   "vs previous round": _rate(r["vs_previous"]),
                   "reward accuracy": pct(r.get("reward_accuracy"), 0), "content kept": pct(r["kept"], 0),
                   "stock opening": pct(r["stock_share"], 0), "loops": r["loops"],
                   "mean length (chars)": None if r["mean_chars"] is None else round(r["mean_chars"]),
                   "pairs": r["pairs"],
                   "dropped by the opening guard": (f"{r['dropped']} (\"{r['dropped_opening']} …\")"
                                                    if r.get("dropped") else r.get("dropped"))} for r in rows],
                 caption="each round on the same held-out prompts, 95 % intervals")
    if len(rows) > 1:
        report.image(plot_curve(rows, plots / "rounds.png"), caption="the round curve")
